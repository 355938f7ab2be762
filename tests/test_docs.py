"""The user docs as a newcomer reads them: every `train.py` line composes as written, every link resolves.

A command line in README.md or docs/*.md is composed with its overrides and validated exactly as
`python train.py` would before training (Hydra composition, then `to_config`), so a renamed key, a
removed option or a line that is not a command (a shell pipe of alternatives) fails here.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from repl.config import compose, to_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "repl" / "method" / "CARD.md"]
# Options that belong to the launcher or the shell, not to the composed config.
LAUNCH_FLAGS = {"-m", "--multirun"}


def _code_lines(path: Path) -> list[str]:
    """The lines of a file's fenced code blocks, continuation lines joined."""
    lines, inside, pending = [], False, ""
    for raw in path.read_text().splitlines():
        if raw.strip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        lines.append(line)
    return lines


def _train_commands() -> list[tuple[str, list[str]]]:
    """(where, overrides) for every `python train.py` / `repl-train` / `torchrun ... train.py` line."""
    found = []
    for path in DOCS:
        for line in _code_lines(path):
            if "train.py" not in line and "repl-train" not in line:
                continue
            words = shlex.split(line, comments=True)
            if "train.py" in words:
                args = words[words.index("train.py") + 1:]
            elif words[:1] == ["repl-train"]:
                args = words[1:]
            else:
                continue
            found.append((f"{path.relative_to(ROOT)}: {line.strip()}", args))
    return found


COMMANDS = _train_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 20  # the README alone shows more: a parser that finds none would pass everything


@pytest.mark.parametrize("where,args", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_every_documented_command_composes(where: str, args: list[str]) -> None:
    assert not any(a in {"|", "&&", ";"} for a in args), f"not one command: {where}"
    if any(a.startswith("--") and a not in LAUNCH_FLAGS for a in args):  # --help, --cfg: Hydra's own flags
        return
    overrides = [a for a in args if a not in LAUNCH_FLAGS]
    if any(o.startswith(("launcher=", "hydra.launcher")) for o in overrides):
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    multirun = any(a in LAUNCH_FLAGS for a in args)
    if multirun:  # a sweep: compose its first point
        overrides = [re.sub(r"=([^,=]*),.*$", r"=\1", o) if "," in o and not o.startswith("+") else o for o in overrides]
    to_config(compose(overrides))


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_links_resolve_inside_the_repository(path: Path) -> None:
    text = path.read_text()
    assert "../shared" not in text, f"{path.name} points at ../shared, which users never have"
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        resolved = (path.parent / target).resolve()
        assert resolved.exists(), f"{path.relative_to(ROOT)} links {target}, which does not exist"
        assert ROOT in resolved.parents or resolved == ROOT, f"{path.name} links {target}, outside the repository"


SCRIPT = re.compile(r"(?:^|\s|&&\s*)(?:python3?\s+|bash\s+)?((?:scripts|benchmarks)/[\w/.-]+\.(?:py|sh))")


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_documented_scripts_exist(path: Path) -> None:
    for line in _code_lines(path):
        for script in SCRIPT.findall(line):
            assert (ROOT / script).is_file(), f"{path.relative_to(ROOT)} runs {script}, which does not exist"


def _python_block_after(path: Path, heading: str) -> str:
    """The first ```python block after `heading` in `path`."""
    text = path.read_text()
    after = text[text.index(heading):]
    start = after.index("```python\n") + len("```python\n")
    return after[start:after.index("```", start)]


def test_the_readme_python_api_snippet_runs_as_written():
    """Copied into a file and run, it converts, describes and bakes (it once asked for a ratio no model allows)."""
    namespace: dict = {}
    exec(compile(_python_block_after(ROOT / "README.md", "### Python API"), "README.md", "exec"), namespace)
    plan, plain = namespace["plan"], namespace["plain"]
    assert plan.blocks and plan.method == "repl"
    assert all("Surrogate" not in type(m).__name__ for m in plain.modules())  # baked: ordinary modules
