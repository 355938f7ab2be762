"""The Python API (`from repl import ReplConfig, apply_replacement, bake`) under use and misuse: the modules a method
puts in keep the model's mode, and each mistake is one ReplError naming the argument and what is accepted."""
import dataclasses

import pytest
import torch
from torch import nn

from repl import ReplConfig, apply_replacement, bake
from repl.baselines import EvalBatchNorm2d
from repl.errors import ConfigError, RegistrationError, ReplError
from repl.families import FAMILIES, BlockInfo, FamilyAdapter, register_family
from repl.method.config import CHOICES, check_types
from repl.models import CifarResNet

METHODS = [  # every method, and repl composed with stochastic depth
    {"method": "repl"}, {"method": "drop"}, {"method": "freeze"}, {"method": "stochastic_depth"},
    {"method": "layerdrop", "ratio": 0.5}, {"method": "repl", "stochastic_depth": True},
]
IDS = ["repl", "drop", "freeze", "stochastic_depth", "layerdrop", "repl+stochastic_depth"]


def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return CifarResNet(20, num_classes=10)


@pytest.mark.parametrize("overrides", METHODS, ids=IDS)
def test_a_model_converted_in_eval_mode_stays_in_eval_mode(overrides):
    model = resnet20().eval()
    apply_replacement(model, **overrides)
    assert not any(m.training for m in model.modules())
    x = torch.randn(2, 3, 16, 16)
    torch.manual_seed(1)
    first = model(x)
    assert all(torch.equal(model(x), first) for _ in range(4))  # stochastic wrappers draw nothing in eval


@pytest.mark.parametrize("overrides", METHODS, ids=IDS)
def test_a_model_converted_in_train_mode_stays_in_train_mode(overrides):
    model = resnet20().train()
    apply_replacement(model, **overrides)
    # freeze's norms normalise with their fixed statistics whatever the mode: their train() keeps them in eval
    assert {type(m) for m in model.modules() if not m.training} <= {EvalBatchNorm2d}
    assert any(isinstance(m, EvalBatchNorm2d) for m in model.modules()) == (overrides["method"] == "freeze")


def test_new_modules_take_the_mode_of_what_they_replace_and_kept_modules_keep_theirs():
    model = resnet20().train()
    model.layer1.eval()  # a part in eval mode (a frozen stage), the rest training
    model.layer2[0].conv1.eval()  # one kept submodule with a mode of its own
    plan = apply_replacement(model, method="stochastic_depth")
    assert plan.blocks
    assert not any(m.training for m in model.layer1.modules())
    assert all(m.training for m in model.layer3.modules()) and model.layer2[0].training
    assert not model.layer2[0].conv1.training and model.layer2[0].conv2.training


def test_every_method_refuses_a_second_conversion_naming_it():
    for overrides in METHODS:
        model = resnet20()
        apply_replacement(model, **overrides)
        for second in ({"method": "repl"}, overrides):
            with pytest.raises(ConfigError, match=rf"already applied to this model \(.*repl\.method={overrides['method']}\)"
                                                  r"; build a fresh one$"):
                apply_replacement(model, **second)


def test_bake_keeps_the_mark_where_the_block_sequence_changed():
    lite, full = resnet20(), resnet20()
    apply_replacement(lite, surrogate="lite")
    apply_replacement(full, surrogate="full")
    with pytest.raises(ConfigError, match="already applied"):
        apply_replacement(bake(lite))  # its baked blocks are lite modules, not the family's blocks
    assert apply_replacement(bake(full)).blocks  # the stock architecture again


@pytest.mark.parametrize("wrap, attribute", [(nn.DataParallel, "module"), (torch.compile, "_orig_mod")],
                         ids=["DataParallel", "compile"])
def test_a_wrapped_model_is_refused_naming_the_model_inside(wrap, attribute):
    model = resnet20()
    with pytest.raises(ConfigError, match=rf"pass model\.{attribute}, and convert before torch\.compile"):
        apply_replacement(wrap(model))
    assert apply_replacement(getattr(wrap(model), attribute)).blocks


@pytest.mark.parametrize("given, suggested", [(0.25, "ratio=0.25"), ({"ratio": 0.25}, r"\*\*settings"),
                                              ("uniform", "ratio=0.25")])
def test_a_second_argument_other_than_a_config_is_refused(given, suggested):
    with pytest.raises(ConfigError, match=rf"second argument is a repl\.ReplConfig or None, not a {type(given).__name__}; "
                                          rf"pass ReplConfig\({suggested}\) or keywords: apply_replacement\(model, {suggested}\)"):
        apply_replacement(resnet20(), given)


@pytest.mark.parametrize("key, value, expected", [
    ("neighbor_grad", "false", "true or false (a bool)"),
    ("neighbor_grad", 0, "true or false (a bool)"),
    ("stochastic_depth", "yes", "true or false (a bool)"),
    ("seed", "a", "an integer"),
    ("seed", 1.5, "an integer"),
    ("seed", True, "an integer"),
    ("start", 1.5, "an integer"),
    ("ratio", "0.25", "a number"),
    ("ratio", "abc", "a number"),
    ("ratio", None, "a number"),
    ("ratio", [0.25], "a number"),
    ("ratio", True, "a number"),
    ("init_a", "x", "a number"),
    ("blocks", 3, "a list of integers, or None (null)"),
    ("blocks", [1, 3.0], "a list of integers, or None (null)"),
    ("select", 3, "a string (one of uniform, random, explicit, similarity)"),
])
def test_values_of_the_wrong_type_are_refused_naming_the_key(key, value, expected):
    overrides = {key: value, **({"select": "explicit"} if key == "blocks" else {})}
    with pytest.raises(ConfigError) as err:
        apply_replacement(resnet20(), **overrides)
    assert str(err.value) == f"repl.{key}={value!r} must be {expected}"
    with pytest.raises(ConfigError):
        ReplConfig(**overrides).validate()


def test_values_of_the_declared_types_are_accepted():
    assert ReplConfig(ratio=0, seed=3, init_a=1, survival_last=1).validate().ratio == 0  # an int for a float key
    assert apply_replacement(resnet20(), select="explicit", blocks=(1, 3)).blocks == [1, 3]  # a tuple for a list
    assert apply_replacement(resnet20(), neighbor_grad=False).settings["neighbor_grad"] is False


def test_every_field_is_type_checked_from_its_annotation():
    """A new field is checked as declared: setting each field to a value of no type it takes is refused."""
    for f in dataclasses.fields(ReplConfig):
        with pytest.raises(ConfigError, match=rf"^repl\.{f.name}=<object object at .*> must be "):
            check_types(dataclasses.replace(ReplConfig(), **{f.name: object()}), "repl.")


@pytest.mark.parametrize("inputs, message", [
    (torch.randn(4, 3, 16, 16), r"got a Tensor; it takes a list of batches.*wrap a single batch in a list, inputs=\[x\]"),
    ([(torch.randn(4, 3, 16, 16), torch.zeros(4))], r"batch 0 is a tuple; each batch is a tensor.*\(x, not \(x, y\)\)"),
    ([], "got an empty list"),
    (lambda: torch.randn(4, 3, 16, 16), "got a Tensor"),  # what a function returns is checked when it is called
])
def test_cka_inputs_other_than_a_list_of_batches_are_refused(inputs, message):
    with pytest.raises(ConfigError, match=message):
        apply_replacement(resnet20(), select="similarity", similarity="cka", inputs=inputs)


def test_cka_inputs_as_a_tuple_of_batches_are_scored():
    plan = apply_replacement(resnet20(), select="similarity", similarity="cka", inputs=(torch.randn(4, 3, 16, 16),))
    assert plan.scores and plan.blocks


def test_registering_a_family_again():
    class Toy(nn.Module):
        pass

    def enumerate_toy(model):
        return [BlockInfo(0, "x", "toy", "linear", 4, 4, 1, False, ())]

    toy = FamilyAdapter("toy_api", "test-only", lambda m: isinstance(m, Toy), enumerate_toy)
    redefined = FamilyAdapter("toy_api", "redefined", lambda m: isinstance(m, Toy), enumerate_toy)
    count = len(FAMILIES)
    try:
        register_family(toy)
        register_family(toy)  # the same object again (a notebook cell run twice) changes nothing
        assert len(FAMILIES) == count + 1
        with pytest.raises(RegistrationError, match=r"'toy_api' is already registered \(test-only\).*replace=True"):
            register_family(redefined)
        assert isinstance(RegistrationError("x"), ReplError)
        register_family(redefined, replace=True)
        assert len(FAMILIES) == count + 1 and FAMILIES[-1] is redefined
    finally:
        FAMILIES[:] = [f for f in FAMILIES if f.name != "toy_api"]


def test_choice_values_are_plain_strings_and_the_message_lists_them():
    defaults = ReplConfig()
    for key, allowed in CHOICES.items():  # built from the enums: members there would print as Select.UNIFORM
        assert all(type(value) is str for value in allowed), key
        assert type(getattr(defaults, key)) is str and getattr(defaults, key) in allowed, key
    with pytest.raises(ConfigError, match=r"repl.select='best' is not supported; choose one of uniform, random, explicit, similarity$"):
        ReplConfig(select="best").validate()
