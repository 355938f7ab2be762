"""`repl-export RUN_DIR [--out DIR]` / `python -m repl.export`: a trained run as a plain checkpoint.

Reads RUN_DIR/checkpoints/last.pt, rebuilds the trained model (the EMA weights when the run kept an
EMA: those are the ones it evaluated), bakes every surrogate into an ordinary module and writes into
DIR (default RUN_DIR/export):

    model.safetensors   the baked model's state_dict (safetensors)
    model.pt            the same state_dict (torch.save; torch.load(..., weights_only=True))
    architecture.json   what to build to load it: the model registry entry and, for surrogate=lite,
                        which blocks are repl.models.lite modules made of which of the block's modules;
                        where it came from (the run, the commit that trained it, the exporting versions)
                        and the SHA-256 of the weight files. It is written last, so a re-export cut short
                        leaves files that do not match it, and load_exported refuses them.

With repl.surrogate=full (or a baseline that keeps the architecture) the state_dict loads strictly
into the stock model (timm, torchvision or the project's); with `lite` into `build_exported(arch)`,
which needs repl.models and repl.families (no surrogate machinery). Bad input is one line and exit status 2.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from omegaconf import OmegaConf
from torch import nn

from repl.engine import rundir
from repl.errors import ReplError
from repl.models.config import ModelConfig

FORMAT = "repl-export/2"  # 2: the model's data inputs under model.inputs (1: num_classes/in_chans/image_size, still read)
ARCHITECTURE = "architecture.json"
SAFETENSORS = "model.safetensors"
STATE_DICT = "model.pt"

class ExportError(ReplError):
    """The run directory cannot be exported (no such run, no or bad checkpoint, unwritable output), or an export
    directory cannot be loaded (load_exported: no such directory, a file of the export missing or unreadable)."""


# ---------------------------------------------------------------------------------- loading side
def build_exported(arch: Dict[str, Any]) -> nn.Module:
    """The exported architecture, randomly initialised: the stock model with its lite blocks in place.

    Each lite block is rebuilt from the stock block by its block family's lite operator
    (repl.families, no surrogate machinery), so every family's lite exports the same way; load the
    exported state_dict into it with `load_state_dict(state, strict=True)`.
    """
    from repl.families import discover_blocks
    from repl.models import build_model

    spec = arch["model"]
    # "inputs": what the data gives the model (repl.data.model_inputs); exports before it held the image keys
    inputs = spec.get("inputs") or {k: spec[k] for k in ("num_classes", "in_chans", "image_size")}
    model = build_model(ModelConfig(source=spec.get("source", "repl"), name=spec["name"],
                                    kwargs=dict(spec.get("kwargs", {}))), **inputs)
    lite_blocks = arch.get("lite_blocks", [])
    infos = {info.path: info for info in discover_blocks(model)} if lite_blocks else {}
    for block in lite_blocks:
        info = infos.get(block["path"])
        if info is None or info.lite is None:
            raise ExportError(f"{ARCHITECTURE}: {block['path']} is not a block with a lite operator in {spec['name']}")
        body = info.lite.build(model.get_submodule(block["path"]), info)
        if type(body).__name__ != block["class"]:
            raise ExportError(f"{ARCHITECTURE}: {block['path']} was exported as {block['class']}, "
                              f"this version builds {type(body).__name__}")
        _set_submodule(model, block["path"], body)
    return model.eval()


def load_exported(directory: Path) -> nn.Module:
    """The exported model of `directory` (architecture.json + model.safetensors, as repl-export writes into
    RUN_DIR/export), in eval mode; ExportError naming the path when it is not such a directory."""
    from safetensors.torch import load_file

    directory = Path(directory)
    _check_export_dir(directory)
    try:
        arch = json.loads((directory / ARCHITECTURE).read_text())
    except (OSError, ValueError) as err:
        raise ExportError(f"{directory / ARCHITECTURE} cannot be read: {getattr(err, 'strerror', None) or err}") from None
    check_digest(directory, arch)
    model = build_exported(arch)
    model.load_state_dict(load_file(str(directory / SAFETENSORS)), strict=True)
    return model


def check_digest(directory: Path, arch: Dict[str, Any]) -> None:
    """ExportError when a weight file's SHA-256 is not the one architecture.json records (a re-export cut short
    between files, or a file replaced by hand); exports older than the record are not checked."""
    for name, expected in (arch.get("sha256") or {}).items():
        path = directory / name
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise ExportError(f"{path} is not the file {directory / ARCHITECTURE} was written with (its SHA-256 "
                              "differs: an export cut short, or a file replaced); export the run again")


def _check_export_dir(directory: Path) -> None:
    """ExportError unless `directory` holds the files load_exported reads; a run dir is pointed at its export/."""
    expected = f"an export directory holding {ARCHITECTURE} and {SAFETENSORS} (repl-export RUN_DIR writes RUN_DIR/export)"
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise ExportError(f"load_exported({str(directory)!r}): {directory} {what}; it takes {expected}")
    missing = [name for name in (ARCHITECTURE, SAFETENSORS) if not (directory / name).is_file()]
    if not missing:
        return
    if (directory / "export" / ARCHITECTURE).is_file():
        raise ExportError(f"load_exported({str(directory)!r}): {directory} is a run directory; its export is "
                          f"{directory / 'export'}: pass that")
    hint = (f"; export the run first: repl-export {directory}" if (directory / rundir.CHECKPOINTS).is_dir() else "")
    raise ExportError(f"load_exported({str(directory)!r}): {directory} has no {' and no '.join(missing)}; "
                      f"it takes {expected}{hint}")


def _set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


# ---------------------------------------------------------------------------------- exporting side
def load_run(run_dir: Path) -> Tuple[Any, Dict[str, Any]]:
    """The run's TrainConfig and training checkpoint; ExportError when either is missing or unusable."""
    from repl.config import from_stored
    from repl.engine.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run directory")
    path = run_dir / rundir.CHECKPOINTS / rundir.LAST
    if not path.is_file():
        raise ExportError(f"{run_dir} has no checkpoint ({path}); train it first")
    try:
        state = load_checkpoint(path)
    except ReplError as err:
        raise ExportError(str(err).split(";")[0]) from None
    try:
        cfg = from_stored(state["config"])
    except Exception as err:  # noqa: BLE001 - a config this version cannot read
        raise ExportError(f"checkpoint {path} holds a config this version cannot read: "
                          f"{str(err).splitlines()[0]}") from None
    return cfg, state


def trained_model(cfg: Any, state: Dict[str, Any]) -> nn.Module:
    """The model as trained (method applied) with the checkpoint's weights: the EMA's when it kept one."""
    from repl.data import model_inputs
    from repl.engine.checkpoint import EMA
    from repl.method.schedule import Phase, model_in_phase
    from repl.models import build_model

    model_cfg = replace(cfg.model, pretrained=False, weights=None)  # every weight comes from the checkpoint
    model = build_model(model_cfg, **model_inputs(cfg.dataset, cfg.task.name))
    # the phase the checkpoint was written in (repl.start / repl.restore); older checkpoints: the method's
    model_in_phase(model, cfg.repl, Phase(state.get("progress", {}).get("phase", Phase.METHOD.value)))
    weights = state["model"]
    if EMA in state:  # torch.optim.swa_utils.AveragedModel: module.<key>, plus n_averaged
        weights = {k[len("module."):]: v for k, v in state[EMA].items() if k.startswith("module.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ExportError(f"the checkpoint does not match its own config: {str(err).splitlines()[0]}") from None
    return model.eval()


def architecture(cfg: Any, baked: nn.Module) -> Dict[str, Any]:
    """architecture.json: the registry entry to build and the lite blocks to put in it."""
    from repl.data import model_inputs

    arch: Dict[str, Any] = {
        "format": FORMAT,
        "model": {"source": cfg.model.source, "name": cfg.model.name, "kwargs": dict(cfg.model.kwargs),
                  "inputs": model_inputs(cfg.dataset, cfg.task.name)},
        "method": cfg.repl.method, "surrogate": cfg.repl.surrogate, "task": cfg.task.name,
    }
    lite_blocks = _lite_specs(arch, baked)
    if lite_blocks:
        arch["lite_blocks"] = lite_blocks
    return arch


def _lite_specs(arch: Dict[str, Any], baked: nn.Module) -> list:
    """For each lite block of `baked`: its path, its class and which module of the stock block each of its
    modules is (what `build_exported` rebuilds with the block family's lite operator, written out for readers).

    A block is a lite one when it is of the class its family's lite operator builds from the stock block.
    """
    from repl.families import discover_blocks

    stock = build_exported({"model": arch["model"]})
    specs = []
    for info in discover_blocks(stock):
        block, mine = stock.get_submodule(info.path), baked.get_submodule(info.path)
        if info.lite is None or type(mine) is type(block):
            continue
        names = {id(module): name for name, module in block.named_modules() if name}
        body = info.lite.build(block, info)
        if type(body) is not type(mine):
            continue
        modules = {name: names.get(id(module), "") for name, module in body.named_children()}
        strides = {name: list(module.stride) for name, module in body.named_children() if isinstance(module, nn.Conv2d)}
        specs.append({"path": info.path, "class": type(body).__name__, "modules": modules, "strides": strides})
    return specs


def export_run(run_dir: Path, out: Optional[Path] = None) -> Path:
    """Bake the run's model and write model.safetensors, model.pt and architecture.json; returns the directory."""
    from safetensors.torch import save as safetensors_bytes

    from repl import bake
    from repl.engine.checkpoint import EMA, atomic_write_bytes, atomic_write_json

    cfg, state = load_run(run_dir)
    baked = bake(trained_model(cfg, state)).eval()
    arch = architecture(cfg, baked)
    weights = {k: v.detach().clone().contiguous() for k, v in baked.state_dict().items()}  # no shared storage
    try:
        build_exported(arch).load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ExportError(f"repl.method={cfg.repl.method} changes the architecture in a way export cannot describe: "
                          f"{str(err).splitlines()[0]}") from None
    progress = state["progress"]
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    files = {SAFETENSORS: safetensors_bytes(weights, metadata={"format": FORMAT}), STATE_DICT: buffer.getvalue()}
    arch.update(step=progress["step"], weights=EMA if EMA in state else "model",
                metrics=dict(progress.get("eval_metrics") or {}), files=list(files),
                sha256={name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
                provenance=provenance(Path(run_dir)))
    out = Path(out) if out is not None else Path(run_dir) / "export"
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            atomic_write_bytes(out / name, data)
        atomic_write_json(out / ARCHITECTURE, arch)  # last: it names the files it was written with
    except OSError as err:
        raise ExportError(f"cannot write the export into {out}: {err.strerror or type(err).__name__}") from None
    return out


def provenance(run_dir: Path) -> Dict[str, Any]:
    """Where an export came from: the run directory, the commit and torch that trained it (its env.json, when
    readable) and the commit and torch that exported it."""
    from repl.engine.measure.env import git_revision

    trained: Dict[str, Any] = {}
    try:
        env = json.loads((run_dir / "env.json").read_text())
        trained = {key: env.get(key) for key in ("git_sha", "git_dirty", "torch", "device")}
    except (OSError, ValueError, AttributeError):  # no env.json, or not a JSON object: the export says so
        trained = {}
    sha, dirty = git_revision()
    return {"run_dir": str(run_dir.resolve()), "trained_with": trained or None,
            "exported_with": {"git_sha": sha, "git_dirty": dirty, "torch": torch.__version__}}


def main(argv: Optional[list] = None) -> int:
    """Console-script entry: exit 0, or 2 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="repl-export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (holds checkpoints/last.pt)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: RUN_DIR/export)")
    args = parser.parse_args(argv)
    try:
        out = export_run(args.run_dir, args.out)
    except ReplError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {args.run_dir} to {out}: {SAFETENSORS}, {STATE_DICT}, {ARCHITECTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
