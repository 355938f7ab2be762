"""op_time.py at tiny sizes: the per-op-kind accounting must add up to the FLOP counter's totals (never a time)."""
import json

import pytest
import torch

from repl.engine.measure.flops import train_flops
from repl.errors import ConfigError


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    import benchmarks.op_time as op_time

    out = tmp_path_factory.mktemp("op_time")
    res = op_time.main(["--models", "resnet32", "--batch", "resnet32=2", "--steps", "1", "--kept", "--device", "cpu",
                        "--out-dir", str(out)])
    return res, out


def test_bp_repl_and_baked_rows_with_files_naming_hardware(result):
    res, out = result
    assert json.loads((out / "op_time_cpu.json").read_text()) == json.loads(json.dumps(res))
    assert res["hardware"]["cpu"] and res["software"]["torch"]
    (model,) = res["models"]
    assert [c["label"] for c in model["configs"]] == ["bp", "lite", "lite kept", "lite rebuilt", "lite baked"]
    table = (out / "op_time_cpu.md").read_text()
    assert "## resnet32" in table and "**all ops**" in table and "step, uninstrumented" in table


def test_flops_per_kind_sum_to_the_projects_flop_count(result):
    """Counting per op kind loses and invents nothing: the kinds sum to train_flops of the same BP step."""
    import benchmarks.cost as cost

    (model,) = result[0]["models"]
    bp = model["configs"][0]
    spec = cost.SPECS["resnet32"]
    torch.manual_seed(0)
    net = spec.build().train()
    batch = spec.make_batch(2, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert sum(bp["flops"].values()) == train_flops(lambda: cost.loss_of(spec)(net, batch).backward())


def test_convolutions_are_split_by_kernel_and_phase(result):
    """ResNet-32 has 3x3 convs and two 1x1 projection shortcuts; a conv's backward costs twice its forward
    (input and weight gradients), except the stem's, whose input gradient autograd never asks for."""
    (model,) = result[0]["models"]
    bp, lite, kept, rebuilt, baked = model["configs"]
    conv = {k: v for k, v in bp["flops"].items() if k.startswith("conv")}
    assert set(conv) == {"conv 3x3", "conv 3x3 (backward)", "conv 1x1", "conv 1x1 (backward)"}
    assert conv["conv 1x1 (backward)"] == 2 * conv["conv 1x1"]
    assert conv["conv 3x3"] < conv["conv 3x3 (backward)"] < 2 * conv["conv 3x3"]
    # lite drops one 3x3 conv of each replaced block: fewer conv FLOPs, the same in RepL and in its baked twin
    assert lite["flops"]["conv 3x3"] == kept["flops"]["conv 3x3"] == baked["flops"]["conv 3x3"] < bp["flops"]["conv 3x3"]
    # the synthesis runs only in RepL: its weight products appear there and not in the baked network
    assert lite["calls"].get("addcmul", 0) > 0 and baked["calls"].get("addcmul", 0) == 0
    # the rebuild runs in backward: synthesis ops there when weights are freed, none with the weights kept, and
    # auto (the default) frees fewer than `rebuilt` at this batch (it keeps the first stage's small 3x3 weights)
    def rebuild_calls(row):
        return {k: n for k, n in row["calls"].items() if k.endswith("(backward)") and k.split()[0] in ("mul", "addcmul_")}

    always, auto = rebuild_calls(rebuilt), rebuild_calls(lite)
    assert auto and all(kept["calls"].get(k, 0) < n for k, n in auto.items())
    assert always["addcmul_ (backward)"] > auto["addcmul_ (backward)"]


def test_bad_arguments_stop_with_one_line_naming_the_option(script, capsys):
    op_time = script("op_time")
    for argv, option in ((["--models", "nope"], "--models"), (["--ratio", "1.5"], "--ratio"),
                         (["--batch", "resnet32=0"], "--batch"), (["--steps", "0"], "--steps")):
        with pytest.raises(SystemExit) as stop:
            op_time.parse_args(argv)
        assert stop.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert "error:" in last and option in last


def test_steady_allocator_takes_where_malloc_is_glibcs(script):
    import platform

    assert script("common").steady_allocator() is (platform.libc_ver()[0] == "glibc")


def test_runs_record_the_allocator_setting(result):
    import platform

    assert result[0]["settings"]["steady_malloc"] is (platform.libc_ver()[0] == "glibc")


def test_channels_last_times_the_same_ops_in_nhwc(script, tmp_path):
    """--channels-last (shared with cost.py): the same FLOPs per kind of op (NHWC adds only layout ops, of no
    FLOPs), the layout named in the table."""
    op_time = script("op_time")
    argv = ["--models", "resnet32", "--batch", "resnet32=2", "--steps", "1", "--no-baked", "--device", "cpu",
            "--out-dir", str(tmp_path)]
    nchw = op_time.main(argv)
    nhwc = op_time.main([*argv, "--channels-last", "--tag", "nhwc"])
    assert nhwc["settings"]["channels_last"] is True and nchw["settings"]["channels_last"] is False
    for a, b in zip(nchw["models"][0]["configs"], nhwc["models"][0]["configs"]):
        assert {k: n for k, n in a["flops"].items() if n} == {k: n for k, n in b["flops"].items() if n}
        assert a["flops"]["conv 3x3"] > 0
    assert "channels-last (NHWC)" in (tmp_path / "op_time_cpu_nhwc.md").read_text()


def test_a_ratio_the_model_cannot_take_stops_before_anything_is_measured(tmp_path):
    """--ratio too large for the model: repl's own one-line reason, and no result file."""
    import benchmarks.op_time as op_time

    with pytest.raises(ConfigError) as stop:
        op_time.main(["--models", "resnet32", "--batch", "resnet32=2", "--steps", "1", "--ratio", "0.9",
                      "--device", "cpu", "--out-dir", str(tmp_path)])
    assert str(stop.value) == ("--ratio for resnet32: repl.ratio=0.9 asks for 14 of 15 blocks; "
                               "this cifar_resnet model allows at most 7 (repl.ratio <= 0.466)")
    assert not list(tmp_path.iterdir())


def test_a_run_stopped_part_way_keeps_the_models_it_profiled(tmp_path, monkeypatch, stop_at):
    """As cost.py: after each model but the last, op_time_<device>.partial.* holds what is profiled so far."""
    import benchmarks.op_time as op_time

    profile = op_time.measure_model
    stop_at(op_time, "lm")
    with pytest.raises(KeyboardInterrupt):
        op_time.main(["--models", "resnet32,lm", "--batch", "resnet32=2", "--batch", "lm=2", "--steps", "1",
                      "--device", "cpu", "--out-dir", str(tmp_path)])
    partial = json.loads((tmp_path / "op_time_cpu.partial.json").read_text())
    assert [m["model"] for m in partial["models"]] == ["resnet32"] and partial["json_name"] == "op_time_cpu.partial.json"
    assert partial["notes"][0].startswith("partial: lm not measured yet")
    assert "partial: lm" in (tmp_path / "op_time_cpu.partial.md").read_text()
    assert not (tmp_path / "op_time_cpu.json").exists()
    monkeypatch.setattr(op_time, "measure_model", profile)
    op_time.main(["--models", "resnet32", "--batch", "resnet32=2", "--steps", "1", "--device", "cpu",
                  "--out-dir", str(tmp_path)])
    assert (tmp_path / "op_time_cpu.json").exists() and not list(tmp_path.glob("*.partial.*"))
