"""The method registry: every method is one record, found without edits elsewhere, and nothing else compares names."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from repl.errors import ConfigError, RegistrationError
from repl.method.config import ReplConfig
from repl.method.registry import MethodRecord, Selection, get_method, method_names, register_method

ROOT = Path(__file__).resolve().parents[2]


def test_every_shipped_method_has_a_record_and_a_yaml():
    names = method_names()
    assert names[:2] == ["repl", "bp"]
    assert {"drop", "freeze", "stochastic_depth", "layerdrop"} <= set(names)
    methods_in_yamls = {line.split(":", 1)[1].strip() for p in (ROOT / "configs" / "repl").glob("*.yaml")
                        for line in p.read_text().splitlines() if line.startswith("method:")}
    assert methods_in_yamls == set(names)


def test_an_unknown_method_names_the_key_and_every_choice():
    with pytest.raises(ConfigError, match=r"repl.method='dropout' is not supported; choose one of repl, bp, .*layerdrop"):
        ReplConfig(method="dropout").validate()


def test_a_name_is_registered_once():
    with pytest.raises(RegistrationError, match="already registered"):  # a ReplError: one line from the entry point
        register_method(MethodRecord(name="drop", summary="another drop", selection=Selection.CHOSEN))
    assert register_method(get_method("drop")) is get_method("drop")


@pytest.mark.parametrize("method,key,value", [("drop", "fusion", "tensor"), ("stochastic_depth", "select", "random"),
                                              ("bp", "surrogate", "full"), ("layerdrop", "survival_last", 0.2),
                                              ("freeze", "recompute", False)])
def test_a_switch_the_method_does_not_read_is_refused(method, key, value):
    shown = str(value).lower() if isinstance(value, bool) else str(value)
    with pytest.raises(ConfigError, match=rf"^repl\.{key}={shown} applies to repl.method=.*repl.*, not {method}$"):
        ReplConfig(method=method, **{key: value}).validate()


def test_ratio_zero_is_plain_backprop_only_where_ratio_is_the_methods_knob():
    assert ReplConfig(method="bp").is_plain_backprop
    assert ReplConfig(method="layerdrop", ratio=0.0).is_plain_backprop
    assert ReplConfig(method="drop", ratio=0.0).is_plain_backprop
    assert not ReplConfig(method="drop", ratio=0.0, select="explicit", blocks=[2]).is_plain_backprop
    assert not ReplConfig(method="stochastic_depth", ratio=0.0).is_plain_backprop


def test_skips_blocks_is_what_ddp_and_accumulate_ask():
    assert ReplConfig(method="stochastic_depth").skips_blocks and ReplConfig(method="layerdrop").skips_blocks
    assert ReplConfig(stochastic_depth=True).skips_blocks and not ReplConfig().skips_blocks
    assert not ReplConfig(method="layerdrop", ratio=0.0).skips_blocks  # plain backprop skips nothing
    assert not ReplConfig(method="drop").skips_blocks and not ReplConfig(method="freeze").skips_blocks


METHOD_LITERAL = r"""["'](?:{names})["']"""
COMPARISON = r"""(?:==|!=|\bin\b)\s*\(?[^#\n]*{lit}|{lit}\s*(?:==|!=|\bin\b)"""


def test_no_code_outside_the_records_compares_a_method_name():
    """A method is asked through its record; comparing `== "drop"` anywhere else would be a second place to edit."""
    lit = METHOD_LITERAL.format(names="|".join(map(re.escape, method_names())))
    pattern = re.compile(COMPARISON.format(lit=lit))
    files = [p for d in ("repl", "scripts", "benchmarks") for p in (ROOT / d).rglob("*.py")] + [ROOT / "train.py"]
    offending = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in files
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offending == []


def test_the_plan_says_whether_ddp_must_expect_unused_parameters():
    from repl.families import discover_blocks
    from repl.method.plan import make_plan
    from repl.models.cifar_resnet import CifarResNet

    blocks = discover_blocks(CifarResNet(20))
    expected = {("stochastic_depth", False): True, ("repl", True): True, ("repl", False): False,
                ("drop", False): False, ("freeze", False): False, ("layerdrop", False): True, ("bp", False): False}
    for (method, sd), unused in expected.items():
        assert make_plan(blocks, ReplConfig(method=method, stochastic_depth=sd)).skips_blocks is unused, method
