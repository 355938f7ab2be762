"""Nothing outside repl/engine/trainer.py reaches into a Trainer's private state (its `_` attributes).

Benchmarks, studies and tests drive the trainer through its public surface (fit, run_steps,
request_stop, ...; docs/extending.md). The check reads every Python file of the project and flags an
attribute access `<x>._name` whose object is named like a trainer (`trainer`, `self.trainer`,
`run.trainer`, `Trainer`).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[2]
OWNER = ROOT / "repl" / "engine" / "trainer.py"
SCANNED = ("repl", "benchmarks", "scripts", "tests", "train.py")


def _names_a_trainer(node: ast.AST) -> bool:
    if isinstance(node, ast.Name):
        return "trainer" in node.id.lower()
    if isinstance(node, ast.Attribute):
        return "trainer" in node.attr.lower()
    return False


def private_trainer_accesses(source: str, filename: str) -> List[str]:
    """`file:line attr` for each `<trainer>._attr` (dunders excepted) in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and _names_a_trainer(node.value)):
            found.append(f"{filename}:{node.lineno} .{node.attr}")
    return found


def test_the_scan_flags_a_private_access_and_passes_public_ones() -> None:
    code = "trainer.run_steps(3)\nself.trainer.fit()\nrun.trainer._loop()\ntrainer.__class__\n"
    assert private_trainer_accesses(code, "x.py") == ["x.py:3 ._loop"]


def test_no_module_outside_the_trainer_reads_its_private_attributes() -> None:
    files: List[Path] = []
    for part in SCANNED:
        path = ROOT / part
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    offences = []
    for path in files:
        if path == OWNER or path == Path(__file__).resolve():
            continue
        offences += private_trainer_accesses(path.read_text(), str(path.relative_to(ROOT)))
    assert not offences, "private Trainer attributes used outside repl/engine/trainer.py: " + "; ".join(offences)
