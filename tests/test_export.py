"""repl-export: a trained run baked into a plain state_dict that loads strictly where it should."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from repl import bake
from repl.config import compose, to_config
from repl.export import ExportError, export_run, load_exported, load_run, main, trained_model
from repl.method.surrogates import Surrogate
from repl.models import build_model
from repl.models.config import ModelConfig
from repl.models.lite import LiteBasicBlock, LiteTransformerBlock
from repl.run import train
from tests.engine.test_training import TINY


def trained_run(tmp_path: Path, *overrides: str) -> Path:
    run_dir = tmp_path / "run"
    train(to_config(compose(TINY + ["trainer.max_steps=2", "repl.ratio=0.4", *overrides])), run_dir)
    return run_dir


def baked_outputs(run_dir: Path, x: torch.Tensor) -> torch.Tensor:
    """What the run's own model, baked by the training code, computes in eval mode."""
    cfg, state = load_run(run_dir)
    with torch.no_grad():
        return bake(trained_model(cfg, state)).eval()(x)


@pytest.mark.parametrize("model", ["resnet20", "resnet18"])  # the project's CIFAR ResNet, timm's ResNet
def test_full_surrogates_load_strictly_into_the_stock_model(tmp_path, model):
    run_dir = trained_run(tmp_path, f"model={model}", "repl.surrogate=full")
    out = export_run(run_dir)
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    if model == "resnet18":
        import timm

        stock = timm.create_model("resnet18", num_classes=10)
    else:
        stock = build_model(ModelConfig(name=model), num_classes=10, in_chans=3, image_size=16)
    stock.load_state_dict(state, strict=True)
    safetensors_state = load_file(str(out / "model.safetensors"))
    assert safetensors_state.keys() == state.keys()
    assert all(torch.equal(safetensors_state[k], state[k]) for k in state)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(stock.eval()(x), baked_outputs(run_dir, x), rtol=0, atol=1e-6)
    arch = json.loads((out / "architecture.json").read_text())
    assert arch["surrogate"] == "full" and "lite_blocks" not in arch and arch["step"] == 2


def test_torchvision_full_export_loads_into_torchvision(tmp_path):
    import torchvision

    run_dir = trained_run(tmp_path, "model=tv_resnet18", "repl.surrogate=full")
    state = torch.load(export_run(run_dir) / "model.pt", map_location="cpu", weights_only=True)
    stock = torchvision.models.resnet18(num_classes=10)
    stock.load_state_dict(state, strict=True)


@pytest.mark.parametrize("model, lite_class", [("resnet20", LiteBasicBlock), ("vit_t", LiteTransformerBlock)])
def test_lite_export_rebuilds_the_baked_architecture(tmp_path, model, lite_class):
    run_dir = trained_run(tmp_path, f"model={model}", "repl.surrogate=lite")
    out = export_run(run_dir, tmp_path / "exported")
    loaded = load_exported(out)  # strict load into the architecture rebuilt from architecture.json
    kinds = [type(m) for m in loaded.modules()]
    assert lite_class in kinds and Surrogate not in kinds
    arch = json.loads((out / "architecture.json").read_text())
    assert [b["path"] for b in arch["lite_blocks"]] == [p for p, m in loaded.named_modules() if type(m) is lite_class]
    stock = build_model(ModelConfig(name=model), num_classes=10, in_chans=3, image_size=16)
    with pytest.raises(RuntimeError):  # the lite blocks lack tensors of the stock ones
        stock.load_state_dict(torch.load(out / "model.pt", weights_only=True), strict=True)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), baked_outputs(run_dir, x), rtol=0, atol=1e-6)


def test_lite_bottlenecks_keep_the_stride_moved_onto_conv1(tmp_path):
    run_dir = trained_run(tmp_path, "model=resnet50", "repl.surrogate=lite", "repl.select=explicit",
                            "repl.blocks=[3]", "repl.boundary=allow")  # layer2.0: strided, with a projection
    out = export_run(run_dir)
    blocks = json.loads((out / "architecture.json").read_text())["lite_blocks"]
    assert {b["class"] for b in blocks} == {"LiteBottleneck"} and any(b["strides"]["conv1"] == [2, 2] for b in blocks)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(load_exported(out)(x), baked_outputs(run_dir, x), rtol=0, atol=1e-5)


def _one_line_exit_2(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert "no such run directory" in _one_line_exit_2(capsys, str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "no checkpoint" in _one_line_exit_2(capsys, str(tmp_path / "empty"))
    corrupt = tmp_path / "corrupt" / "checkpoints" / "last.pt"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not a checkpoint")
    assert "unreadable" in _one_line_exit_2(capsys, str(tmp_path / "corrupt"))
    run_dir = trained_run(tmp_path, "repl.surrogate=lite")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "cannot write" in _one_line_exit_2(capsys, str(run_dir), "--out", str(blocker / "export"))
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    state = torch.load(broken / "checkpoints" / "last.pt", weights_only=True)
    state["progress"]["phase"] = "warmup"  # what export reads to rebuild the model: checked when it is loaded
    torch.save(state, broken / "checkpoints" / "last.pt")
    err = _one_line_exit_2(capsys, str(broken))
    assert err.startswith(f"error: checkpoint {broken / 'checkpoints' / 'last.pt'} has progress.phase='warmup' where "
                          "one of backprop, method, restored is expected") and "overwrite" not in err
    assert not (broken / "export").exists()
    assert main([str(run_dir)]) == 0
    assert "exported" in capsys.readouterr().out


@pytest.mark.parametrize("method, exported", [("drop", False), ("freeze", True)])
def test_baselines_export_when_the_architecture_is_the_stock_one(tmp_path, capsys, method, exported):
    run_dir = tmp_path / "run"
    train(to_config(compose(TINY + ["trainer.max_steps=1", f"repl={method}"])), run_dir)
    if exported:
        assert main([str(run_dir)]) == 0
        stock = build_model(ModelConfig(name="resnet20"), num_classes=10, in_chans=3, image_size=16)
        stock.load_state_dict(torch.load(run_dir / "export" / "model.pt", weights_only=True), strict=True)
    else:  # dropped blocks are gone: no stock model to load into, and export says so
        assert "repl.method=drop" in _one_line_exit_2(capsys, str(run_dir))


def test_load_exported_names_the_path_and_what_it_takes(tmp_path):
    """No directory, a file, a run dir (pointed at its export/), a run not exported yet: one ExportError each."""
    from repl.export import ARCHITECTURE, ExportError

    takes = "it takes an export directory holding architecture.json and model.safetensors"
    with pytest.raises(ExportError, match=rf"{tmp_path / 'missing'} does not exist; {takes}"):
        load_exported(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match=rf"{tmp_path / 'file'} is not a directory; {takes}"):
        load_exported(tmp_path / "file")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    with pytest.raises(ExportError, match=rf"has no architecture.json and no model.safetensors; {takes}.*"
                                          rf"export the run first: repl-export {run_dir}$"):
        load_exported(run_dir)
    (run_dir / "export").mkdir()
    (run_dir / "export" / ARCHITECTURE).write_text("{}")
    with pytest.raises(ExportError, match=rf"{run_dir} is a run directory; its export is {run_dir / 'export'}: pass that"):
        load_exported(run_dir)
    (run_dir / "export" / ARCHITECTURE).write_text("{not json")
    (run_dir / "export" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ExportError, match=rf"{run_dir / 'export' / ARCHITECTURE} cannot be read"):
        load_exported(run_dir / "export")


def test_an_export_records_its_provenance_and_refuses_files_it_was_not_written_with(tmp_path):
    """architecture.json names the run, the commit that trained it (its env.json) and the files' SHA-256; it is
    written last, so weights left by another (or a cut-short) export are refused instead of loaded."""
    run_dir = trained_run(tmp_path, "repl.surrogate=lite")
    out = export_run(run_dir, tmp_path / "exported")
    arch = json.loads((out / "architecture.json").read_text())
    env = json.loads((run_dir / "env.json").read_text())
    assert arch["provenance"]["run_dir"] == str(run_dir.resolve())
    assert arch["provenance"]["trained_with"]["git_sha"] == env["git_sha"]
    assert arch["provenance"]["exported_with"]["torch"] == torch.__version__
    for name, digest in arch["sha256"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    other = export_run(trained_run(tmp_path / "other", "repl.surrogate=lite", "seed=1"), tmp_path / "other_export")
    shutil.copy(other / "model.safetensors", out / "model.safetensors")  # as a re-export killed after its first file
    with pytest.raises(ExportError, match=r"model.safetensors is not the file .*architecture.json was written with"):
        load_exported(out)
