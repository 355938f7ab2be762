"""cost.py at tiny sizes: the result files' structure and the relationships that must hold (never a time)."""
import json
import platform

import pytest
import torch

TINY = ["--rounds", "1", "--steps", "1", "--warmup", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    import benchmarks.cost as cost

    out = tmp_path_factory.mktemp("cost")
    res = cost.main(["--models", "resnet32,lm", "--batch", "resnet32=2", "--batch", "lm=2", "--size", "lm=16",
                     *TINY, "--out-dir", str(out)])
    return res, out


def test_files_name_hardware_versions_settings_and_load(result):
    res, out = result
    on_disk = json.loads((out / "cost_cpu.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert on_disk["hardware"]["cpu"] and on_disk["software"]["torch"] and on_disk["software"]["timm"]
    assert on_disk["settings"]["threads"] >= 1 and len(on_disk["load_before"]) == 3
    assert on_disk["settings"]["steady_malloc"] is (platform.libc_ver()[0] == "glibc")  # CPU: freed memory kept
    table = (out / "cost_cpu.md").read_text()
    assert "## resnet32" in table and "## lm" in table and "n/a (CPU)" in table
    assert not list(out.glob("*.partial.*"))  # written after resnet32, removed by the complete result


def test_a_run_stopped_part_way_keeps_what_it_measured_beside_the_last_complete_result(tmp_path, stop_at):
    """After each model but the last, cost.py writes what it has as cost_<device>.partial.*: a run stopped by a
    time limit (benchmarks/gpu.sh) keeps its finished models, and an earlier complete result is left as it was."""
    import benchmarks.cost as cost

    earlier = {"benchmark": "cost", "models": ["an earlier complete run"]}
    (tmp_path / "cost_cpu.json").write_text(json.dumps(earlier))
    stop_at(cost, "resnet32")
    with pytest.raises(KeyboardInterrupt):
        cost.main(["--models", "lm,resnet32", "--batch", "lm=2", "--batch", "resnet32=2", "--size", "lm=16",
                   "--ratios", "max", "--surrogates", "lite", *TINY, "--out-dir", str(tmp_path)])
    partial = json.loads((tmp_path / "cost_cpu.partial.json").read_text())
    assert [m["model"] for m in partial["models"]] == ["lm"] and partial["json_name"] == "cost_cpu.partial.json"
    assert any(note.startswith("partial: resnet32 not measured yet") for note in partial["notes"])
    assert "## lm" in (tmp_path / "cost_cpu.partial.md").read_text()
    assert json.loads((tmp_path / "cost_cpu.json").read_text()) == earlier
    assert not (tmp_path / "cost_cpu.md").exists()


def test_bp_then_both_surrogates_at_quarter_and_largest_ratio(result):
    resnet, lm = result[0]["models"]
    assert [c["label"] for c in resnet["configs"]] == ["bp", "lite r=0.25", "full r=0.25", "lite r=max (0.467)",
                                                      "full r=max (0.467)"]
    assert [len(c["blocks"]) for c in resnet["configs"]] == [0, 4, 4, 7, 7]
    assert [c["label"] for c in lm["configs"]][1] == "lite r=0.25 = max (0.333)"  # 6 blocks: both ask for 2


def test_savings_relationships(result):
    resnet = result[0]["models"][0]
    bp, *repl = resnet["configs"]
    for c in repl:
        assert c["params"]["trainable"] < bp["params"]["trainable"]
        assert c["params"]["trainable"] == bp["params"]["trainable"] - c["params"]["replaced"] + c["params"]["fusion"]
        # SGD with momentum keeps one buffer per trainable parameter
        assert c["ratios"]["optimizer"] == pytest.approx(c["ratios"]["trainable"])
        assert c["memory"]["cuda_peak"] is None and c["ratios"]["cuda_peak"] is None
        if c["surrogate"] == "lite":
            assert c["ratios"]["flops"] < 1 and c["ratios"]["activations"] < 1
        else:
            assert c["flops"] == bp["flops"]  # full: the block's computation with synthesized weights
    lite = [c for c in repl if c["surrogate"] == "lite"]
    assert lite[1]["flops"] < lite[0]["flops"]  # more blocks replaced, fewer FLOPs


def test_recompute_rows_keep_less_for_backward_and_change_nothing_else(tmp_path):
    import benchmarks.cost as cost

    res = cost.main(["--models", "lm", "--batch", "lm=2", "--size", "lm=16", "--ratios", "max", "--surrogates", "lite",
                     "--recompute", *TINY, "--out-dir", str(tmp_path)])
    bp, dropped, kept, rebuilt = res["models"][0]["configs"]
    assert [c["label"] for c in (dropped, kept, rebuilt)] == ["lite r=max (0.333)", "lite r=max (0.333) kept",
                                                             "lite r=max (0.333) rebuilt"]
    assert [c["recompute"] for c in (bp, dropped, kept, rebuilt)] == [None, "auto", False, True]
    assert res["settings"]["recompute"]
    # the LM's MLP weights outweigh a quarter of a 2x16-token input: auto frees them, as `rebuilt` does
    assert dropped["memory"]["activations"] == rebuilt["memory"]["activations"] < kept["memory"]["activations"]
    assert dropped["flops"] == kept["flops"] == rebuilt["flops"] and dropped["params"] == kept["params"]


def test_baked_rows_are_the_same_network_without_the_synthesis(tmp_path):
    """--baked: the RepL network with its surrogates materialized has RepL's FLOPs and activations (the same
    computation) but the replaced blocks' weights as its own trainable parameters; each RepL row is timed against it."""
    import benchmarks.cost as cost

    res = cost.main(["--models", "resnet32", "--batch", "resnet32=2", "--ratios", "max", "--surrogates", "lite",
                     "--baked", *TINY, "--out-dir", str(tmp_path)])
    bp, repl, baked = res["models"][0]["configs"]
    assert [c["baked"] for c in (bp, repl, baked)] == [False, False, True] and baked["label"].endswith(" baked")
    assert baked["flops"] == repl["flops"] < bp["flops"]
    # RepL also saves what its synthesis needs for backward (its coefficients, 4 bytes each) and the synthesized
    # weights repl.recompute=auto keeps (the first stage's, at batch 2), never more than all of them
    synthesized = baked["params"]["trainable"] - (repl["params"]["trainable"] - repl["params"]["fusion"])
    assert synthesized > 0  # the synthesized weights became the baked network's parameters
    assert 0 <= repl["memory"]["activations"] - baked["memory"]["activations"] < 4 * (repl["params"]["fusion"] + synthesized)
    assert repl["vs_baked"]["median"] > 0 and bp["vs_baked"] is None and baked["vs_baked"] is None
    assert "vs baked" in (tmp_path / "cost_cpu.md").read_text()
    assert res["models"][0]["aa_time_ratios"] == []  # no `full` row: no A/A control


def test_full_baked_rows_are_the_a_a_control(tmp_path):
    """With `full` and --baked, the `full` baked row is BP's own network (same parameters and FLOPs): its time ratio
    is reported per model as the run's A/A error, in the JSON, the table and beside every missed goal."""
    import benchmarks.cost as cost

    res = cost.main(["--models", "resnet32", "--batch", "resnet32=2", "--ratios", "max", "--surrogates", "full",
                     "--baked", *TINY, "--out-dir", str(tmp_path)])
    model = res["models"][0]
    bp, _, control = model["configs"]
    assert control["baked"] and control["params"]["trainable"] == bp["params"]["trainable"]
    assert control["flops"] == bp["flops"]
    assert model["aa_time_ratios"] == [control["ratios"]["time"]]
    assert f"({control['ratios']['time']:.3f})" in (tmp_path / "cost_cpu.md").read_text().split("A/A:")[1]


def test_channels_last_runs_the_same_computation_in_nhwc(tmp_path, monkeypatch):
    """--channels-last lays out image models and their batch as NHWC (what trainer.channels_last does): the same
    FLOPs and parameters as NCHW, RepL's synthesized weights included; token models are left as they are."""
    import benchmarks.cost as cost

    formats = []
    real = torch.nn.Conv2d._conv_forward

    def spy(self, x, weight, bias):
        formats.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return real(self, x, weight, bias)

    monkeypatch.setattr(torch.nn.Conv2d, "_conv_forward", spy)
    argv = ["--models", "resnet32", "--batch", "resnet32=2", "--ratios", "max", "--surrogates", "lite", *TINY,
            "--out-dir", str(tmp_path)]
    nchw = cost.main(argv)
    assert formats and not any(formats)
    formats.clear()
    nhwc = cost.main([*argv, "--channels-last", "--tag", "nhwc"])
    assert formats and all(formats) and nhwc["settings"]["channels_last"] is True
    for a, b in zip(nchw["models"][0]["configs"], nhwc["models"][0]["configs"]):
        assert a["flops"] == b["flops"] and a["params"] == b["params"]
    assert "channels-last (NHWC)" in (tmp_path / "cost_cpu_nhwc.md").read_text()


def _row(label, ratio, vs_baked=None, flops=0.5):
    return {"label": label, "time": {"step_s": ratio, "rounds_s": [ratio], "ratio": {"median": ratio}},
            "ratios": {"flops": flops, "time": ratio}, "gap": ratio / flops,
            "vs_baked": None if vs_baked is None else {"median": vs_baked}}


def test_merged_processes_report_the_median_of_their_medians():
    """--processes: a row's time ratio is the median over processes of each one's median ratio, its range the
    processes' min-max, the gap follows from it; 'vs baked' and the A/A ratios likewise combine every process."""
    from benchmarks.cost import merge_processes

    runs = [[{"model": "m", "aa_time_ratios": [aa], "configs": [_row("bp", 1.0), _row("lite", t, vs)]}]
            for t, vs, aa in ((0.80, 1.02, 0.99), (0.90, 1.06, 1.01), (0.84, 1.04, 1.00))]
    model, = merge_processes(runs)
    bp, lite = model["configs"]
    assert lite["time"]["ratio"]["median"] == lite["ratios"]["time"] == 0.84
    assert (lite["time"]["ratio"]["min"], lite["time"]["ratio"]["max"]) == (0.80, 0.90)
    assert lite["gap"] == pytest.approx(0.84 / 0.5) and bp["gap"] == pytest.approx(1.0 / 0.5)
    assert lite["vs_baked"]["median"] == 1.04 and len(lite["vs_baked"]["processes"]) == 3
    assert lite["time"]["rounds_s"] == [0.80, 0.90, 0.84] and model["aa_time_ratios"] == [0.99, 1.01, 1.00]
    assert runs[0][0]["configs"][1]["time"]["ratio"]["median"] == 0.80  # the inputs are left as they were
    with pytest.raises(RuntimeError, match="different configurations"):
        merge_processes([runs[0], [{"model": "m", "aa_time_ratios": [], "configs": [_row("bp", 1.0), _row("full", 1.0)]}]])


def test_processes_run_the_measurement_in_fresh_processes(tmp_path):
    """--processes 2: two child processes measure the same configurations (the same FLOPs and memory as one
    process), and the written result says how it was combined."""
    import benchmarks.cost as cost

    argv = ["--models", "lm", "--batch", "lm=2", "--size", "lm=16", "--ratios", "max", "--surrogates", "lite", *TINY,
            "--out-dir", str(tmp_path)]
    one = cost.main(argv)
    two = cost.main([*argv, "--processes", "2", "--tag", "two"])
    assert two["settings"]["processes"] == 2
    for a, b in zip(one["models"][0]["configs"], two["models"][0]["configs"]):
        assert a["label"] == b["label"] and a["flops"] == b["flops"] and a["memory"] == b["memory"]
        assert len(b["time"]["processes"]) == 2 and len(b["time"]["rounds_s"]) == 2
    assert "in each of 2 processes" in (tmp_path / "cost_cpu_two.md").read_text()
    assert json.loads((tmp_path / "cost_cpu_two.json").read_text())["models"] == two["models"]


def test_a_ratio_one_model_cannot_take_is_left_out_with_a_note_and_the_goal_is_not_judged(tmp_path, capsys):
    """One --ratios serves models of different depths, so a ratio too large for one model is left out of its rows,
    said in the notes and on stderr; with no `lite` row the goal is 'not judged', never 'met'."""
    import benchmarks.cost as cost

    res = cost.main(["--models", "lm", "--batch", "lm=2", "--size", "lm=16", "--ratios", "0.25,0.9", "--surrogates",
                     "full", *TINY, "--out-dir", str(tmp_path)])
    assert [c["label"] for c in res["models"][0]["configs"]] == ["bp", "full r=0.25"]
    note = "lm: ratio 0.9 left out: it asks for 5 of 6 blocks, and the model takes 1 to 2"
    assert note in res["notes"] and note in capsys.readouterr().err
    assert res["goal_met"] is False and res["goal_rows"] == 0
    assert "not judged: no `lite` row with the defaults was measured" in (tmp_path / "cost_cpu.md").read_text()


def test_a_model_none_of_whose_ratios_fits_is_refused_before_anything_is_measured(tmp_path, monkeypatch):
    """A model that would measure backprop alone (every --ratios entry too large for it) stops the run before the
    first model is measured, naming the flag and the model, and writes nothing."""
    import benchmarks.cost as cost
    from repl.errors import ConfigError

    monkeypatch.setattr(cost, "measure_model", lambda *a: pytest.fail("measured before the ratios were checked"))
    with pytest.raises(ConfigError, match=r"^--ratios for lm: repl.ratio=0.45 asks for 3 of 6 blocks"):
        cost.main(["--models", "resnet32,lm", "--ratios", "0.45", "--surrogates", "lite", *TINY, "--out-dir", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ratios", ["foo", "-1", "1", "0.25,nan"])
def test_a_ratio_that_is_not_max_or_a_fraction_is_refused_in_one_line(ratios, tmp_path, capsys):
    import benchmarks.cost as cost

    with pytest.raises(SystemExit) as stop:
        cost.main(["--models", "lm", "--ratios", ratios, "--out-dir", str(tmp_path)])
    assert stop.value.code == 2
    bad = ratios.split(",")[-1]
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(  # (argparse names the program from argv[0])
        f"error: --ratios: {bad!r} is not 'max' or a number between 0 and 1")
