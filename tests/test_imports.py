"""Every module of repl/ imports, and no two modules of repl/ import each other, directly or around a loop.

The graph is read from the source (AST), not from sys.modules: every explicit `import` of a repl module,
at module level or inside a function (an import deferred into a function still ties the two modules
together), except those under `if TYPE_CHECKING:`. `from repl.a import b` is an edge to repl.a.b when
that is a module, else to repl.a. The parent packages Python imports implicitly are not edges.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from typing import Dict, List, Set

import pytest

import repl

ROOT = Path(repl.__file__).parent
# top-level packages of the optional extras (pyproject.toml): a module importing one that is missing is skipped
OPTIONAL = {"mmcv", "mmengine", "mmdet", "mmseg", "pycocotools", "datasets", "tokenizers", "wandb", "submitit",
            "hydra_plugins", "matplotlib"}


def repl_modules() -> Dict[str, Path]:
    """Every module and package of repl/ with its source file."""
    modules = {"repl": ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], prefix="repl."):
        path = ROOT.joinpath(*info.name.split(".")[1:])
        modules[info.name] = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> List[ast.AST]:
    """Import statements anywhere in the tree, except the bodies of `if TYPE_CHECKING:`."""
    found: List[ast.AST] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return found


def import_edges(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The repl modules `name` imports explicitly."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: Set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        edges.update(t for t in targets if t in known and t != name)
    return edges


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_cycle_finder_reports_a_loop_and_passes_a_chain() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_edges_follow_from_imports_and_skip_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nfrom repl.data import build\nimport repl.errors\n"
                      "if TYPE_CHECKING:\n    from repl.config import TrainConfig\n"
                      "def f():\n    from repl.data.config import X\n")
    known = {"repl.data", "repl.data.build", "repl.errors", "repl.config", "repl.data.config"}
    assert import_edges("repl.x", source, known) == {"repl.data.build", "repl.errors", "repl.data.config"}


@pytest.mark.parametrize("name", sorted(repl_modules()))
def test_module_imports(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in OPTIONAL:
            raise
        pytest.skip(f"{name} needs {err.name}, of an optional extra that is not installed")


def test_no_import_cycle() -> None:
    modules = repl_modules()
    graph = {name: import_edges(name, path, set(modules)) for name, path in modules.items()}
    found = cycles(graph)
    assert not found, "import cycles in repl/: " + "; ".join(" <-> ".join(c) for c in found)


def test_a_config_error_and_the_synthetic_data_import_neither_torchvision_nor_fsdp():
    """What a process that never reads a real image dataset or shards skips importing (about 2 s together): torchvision
    (repl.data.vision is imported only for a real dataset) and torch.distributed.fsdp/.checkpoint (repl.engine.fsdp
    imports them where it shards). Measured in a fresh interpreter; the synthetic set is generated too."""
    import subprocess
    import sys

    code = """
import sys
from repl.config import compose, to_config
from repl.data.classification import build_classification_data, check_classification_files
from repl.engine.trainer import Trainer
import torch
cfg = to_config(compose(["dataset.num_train=16", "dataset.num_eval=8", "dataset.image_size=8", "dataset.batch_size=8"]))
check_classification_files(cfg.dataset)
build_classification_data(cfg.dataset, seed=0, device=torch.device("cpu"))
print(sorted(m for m in ("torchvision", "torch.distributed.fsdp", "torch.distributed.checkpoint") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False,
                          cwd=ROOT.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
