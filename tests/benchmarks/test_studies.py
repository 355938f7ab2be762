"""The study scripts at tiny sizes."""
import json



TRAIN = ["model=resnet20", "dataset.image_size=16", "dataset.num_train=64", "dataset.num_eval=32",
         "dataset.batch_size=32", "trainer.epochs=1"]


def test_checkpointing_keeps_gradients_and_saves_activations(tmp_path, script):
    res = script("studies.checkpointing").main(["--batch", "2", "--rounds", "1", "--steps", "1", "--device", "cpu",
                                                "--out-dir", str(tmp_path)])
    bp, bp_ckpt, repl, repl_ckpt = res["configs"]
    assert json.loads((tmp_path / "checkpointing_cpu.json").read_text())["study"] == "checkpointing"
    for plain, ckpt in ((bp, bp_ckpt), (repl, repl_ckpt)):
        assert ckpt["grad_max_abs_diff_vs_no_checkpointing"] == 0.0
        assert ckpt["memory"]["activations"] < plain["memory"]["activations"]
        assert ckpt["flops"] > plain["flops"]  # the recomputed forwards
    assert repl["flops"] < bp["flops"] and repl["trainable"] < bp["trainable"]


def test_quantize_shrinks_the_baked_model(tmp_path, script):
    res = script("studies.quantize").main([*TRAIN, "--calib", "1", "--rounds", "1", "--steps", "1",
                                           "--out-dir", str(tmp_path)])
    assert (tmp_path / "quantize_resnet20.md").exists()
    assert res["method"] == "repl" and res["plan"]["blocks"]
    assert res["bake_max_abs_diff"] < 1e-4
    assert res["bytes"]["int8"] < res["bytes"]["fp32"] / 2
    assert set(res["metrics"]) == {"fp32", "int8"} and 0 <= res["metrics"]["int8"]["top1"] <= 100
    assert set(res["latency"]) == {"1", "32"}


def test_transfer_finetunes_from_a_weights_file_with_the_users_repl_settings(tmp_path, script):
    """The fine-tuning runs take the user's repl.* (over the study's default ratio 0.25), and their rows are
    labelled with what ran."""
    res = script("studies.transfer").main([*TRAIN, "repl.ratio=0.4", "repl.surrogate=full", "--pretrain-epochs", "1",
                                           "--out-dir", str(tmp_path)])
    runs = res["runs"]
    assert list(runs) == ["pretrain (BP, source task)", "repl full 0.4, from pretrained", "repl full 0.4, from scratch",
                          "BP, from pretrained"] and (tmp_path / "transfer_resnet20.json").exists()
    assert runs["pretrain (BP, source task)"]["summary"]["method"] == "bp"
    assert "model.weights=PRETRAINED.pt" in runs["repl full 0.4, from pretrained"]["overrides"]
    scratch, pretrained = runs["repl full 0.4, from scratch"]["summary"], runs["repl full 0.4, from pretrained"]["summary"]
    assert pretrained["params"] == scratch["params"] and pretrained["plan"]["blocks"] == scratch["plan"]["blocks"]
    assert len(scratch["plan"]["blocks"]) == 4 and scratch["plan"]["settings"]["surrogate"] == "full"  # 0.4 of 9 blocks
    assert pretrained["params"]["trainable"] < runs["BP, from pretrained"]["summary"]["params"]["trainable"]
    assert "| repl full 0.4, from scratch |" in (tmp_path / "transfer_resnet20.md").read_text()


def test_stochastic_depth_study_runs_the_four_methods(tmp_path, script):
    res = script("studies.stochastic_depth").main([*TRAIN, "--out-dir", str(tmp_path)])
    plans = {label: run["summary"]["plan"] for label, run in res["runs"].items()}
    assert [p["method"] for p in plans.values()] == ["bp", "repl", "stochastic_depth", "repl"]
    composed = plans["RepL + stochastic depth"]
    assert composed["blocks"] == plans["RepL"]["blocks"]
    assert composed["settings"]["stochastic_depth"] is True and not plans["RepL"]["settings"]["stochastic_depth"]


def test_inference_baked_equals_surrogates(tmp_path, script):
    res = script("studies.inference").main(["--models", "resnet32,lm", "--batch", "resnet32=2", "--batch", "lm=2",
                                            "--rounds", "1", "--steps", "1", "--device", "cpu", "--out-dir", str(tmp_path)])
    for m in res["models"]:
        bp, surrogates, baked = m["configs"]
        assert m["baked_max_abs_diff"] < 1e-4
        assert baked["forward_flops"] == surrogates["forward_flops"] < bp["forward_flops"]
        assert surrogates["params"] < baked["params"] < bp["params"]  # lite drops the skipped sub-layer's weights
    assert "inference_cpu.md" in {p.name for p in tmp_path.iterdir()}


def test_quantize_transformer_path_is_dynamic_linear(tmp_path, script):
    res = script("studies.quantize").main(["task=lm", "model=lm", "model.kwargs.layers=3", "model.kwargs.dim=32",
                                           "trainer.max_steps=2", "--rounds", "1", "--steps", "1",
                                           "--out-dir", str(tmp_path)])
    assert res["quantization"].startswith("dynamic INT8 nn.Linear") and res["bake_max_abs_diff"] < 1e-4
    assert res["bytes"]["int8"] < res["bytes"]["fp32"] and res["primary"] in res["metrics"]["int8"]


def test_bn_statistics_study_measures_every_column(tmp_path, script):
    res = script("studies.bn_statistics").main([*TRAIN, "trainer.max_steps=2", "--seeds", "0", "--recalibrate", "1,2",
                                                "--out-dir", str(tmp_path)])
    assert (tmp_path / "bn_statistics_resnet20.md").exists()
    rows = res["rows"]
    assert list(rows) == ["backprop", "RepL lite 0.25", "RepL lite 0.44", "RepL full 0.44"]
    for label, row in rows.items():
        (seed,) = row["seeds"]
        assert seed["running"] == seed["trainer_eval"]  # the trainer's own evaluation, with bn_recalibrate=0
        assert set(seed["recalibrated"]) == {"1", "2"} and all(0 <= v <= 100 for v in seed["recalibrated"].values())
        assert ("surrogate_momentum_running" in seed) == (label != "backprop")
        assert (seed["plan"] == []) == (label == "backprop")
