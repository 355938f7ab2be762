"""Surrogates: the operator they compute, references held not copied, and the lite operator's cost."""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from repl import apply_replacement
from repl.errors import ConfigError
from repl.families import discover_blocks, get_module
from repl.method.surrogates import Surrogate
from tests.method.models import BUILDERS, INPUT_SIZE

# name: (builder, input size, explicit blocks: one inside a stage, one at a stage boundary or beside one)
EXPLICIT = {"resnet32": [2, 5], "resnet110": [5, 18], "tv_resnet50": [1, 3], "timm_resnet18": [2, 5],
            "timm_resnet50": [3, 9]}  # blocks replaced in each model
MODELS = {name: (BUILDERS[name], INPUT_SIZE[name], blocks) for name, blocks in EXPLICIT.items()}


def replaced(name, surrogate, **overrides):
    """(model, blocks before surgery as deep copies, block infos, x) with the explicit blocks replaced."""
    build, size, explicit = MODELS[name]
    model = build()
    infos = discover_blocks(model)
    originals = {i: copy.deepcopy(get_module(model, infos[i].path)) for i in explicit}
    apply_replacement(model, select="explicit", blocks=explicit, surrogate=surrogate, **overrides)
    return model, originals, infos, torch.randn(2, 3, size, size)


def block_inputs(model, paths, x):
    """Input of each module at `paths` during one forward."""
    seen = {}
    hooks = [get_module(model, p).register_forward_pre_hook(lambda m, a, p=p: seen.__setitem__(p, a[0].detach().clone()))
             for p in paths]
    model(x)
    for h in hooks:
        h.remove()
    return seen


def warm_up(model, x):
    """One train-mode forward (BN running stats move off their init), then eval mode."""
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def bn(x, module, weight, bias):
    return F.batch_norm(x, module.running_mean, module.running_var, weight, bias, False, 0.0, module.eps)


def lite_by_hand(surrogate, info, x):
    """The lite operator written out with F ops and the synthesized weights."""
    w, body = surrogate.synthesized(), surrogate.body
    shortcut = x if body.downsample is None else body.downsample(x)
    pad = body.conv1.padding
    h = bn(F.conv2d(x, w["conv1.weight"], stride=info.stride, padding=pad), body.bn1, w["bn1.weight"], w["bn1.bias"])
    if info.kind == "bottleneck":
        h = F.conv2d(F.relu(h), w["conv3.weight"])
        h = bn(h, body.bn3, w["bn3.weight"], w["bn3.bias"])
    return F.relu(h + shortcut)


def full_by_hand(surrogate, original, x):
    """The original block class loaded (strictly) with the synthesized weights and the surrogate's own tensors."""
    state = {**surrogate.body.state_dict(), **surrogate.synthesized()}
    block = copy.deepcopy(original)
    block.load_state_dict(state, strict=True)
    return block.eval()(x)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_output_equals_block_computed_with_synthesized_weights(name, surrogate):
    model, originals, infos, x = replaced(name, surrogate, fusion="channel")
    warm_up(model, x)
    paths = [infos[i].path for i in originals]
    inputs = block_inputs(model, paths, x)
    with torch.no_grad():
        for i, original in originals.items():
            module, h = get_module(model, infos[i].path), inputs[infos[i].path]
            assert isinstance(module, Surrogate)
            expected = lite_by_hand(module, infos[i], h) if surrogate == "lite" else full_by_hand(module, original, h)
            assert module(h).shape == original.eval()(h).shape
            torch.testing.assert_close(module(h), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_replaced_blocks_leave_the_tree_and_own_only_unshared_tensors(name):
    model, originals, infos, _ = replaced(name, "full")
    names = set(dict(model.named_parameters()))
    for i, original in originals.items():
        path = infos[i].path
        own = {n for n in names if n.startswith(f"{path}.body.")}
        assert own == {f"{path}.body.{n}" for n, _ in original.named_parameters() if n.startswith("downsample.")}
        assert isinstance(get_module(model, path), Surrogate)


@pytest.mark.parametrize("name", list(MODELS))
def test_each_parameter_registered_once(name):
    model, _, _, _ = replaced(name, "lite", fusion="tensor", adapt="learned")
    listed = [id(p) for _, p in model.named_parameters(remove_duplicate=False)]
    assert len(listed) == len(set(listed))
    state = model.state_dict(keep_vars=True)
    params = [id(t) for t in state.values() if isinstance(t, torch.nn.Parameter)]
    assert len(params) == len(set(params)) == len(listed)


def test_lite_refuses_branch_modules_it_cannot_carry():
    model = timm.create_model("resnet18", num_classes=10, drop_path_rate=0.1)
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match=r"repl\.surrogate=lite .*drop_path"):
        apply_replacement(model, ratio=0.25)
    assert list(model.state_dict()) == list(state)  # refused before any surgery
    apply_replacement(model, ratio=0.25, surrogate="full")
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def neighbour_path(model, surrogate, k):
    return next(p for p, m in model.named_modules() if m is surrogate._neighbours[k])


@pytest.mark.parametrize("name", ["resnet32", "tv_resnet50", "timm_resnet18"])
def test_references_stay_tied_after_deepcopy_and_to_dtype(name):
    model, originals, infos, x = replaced(name, "lite")
    path = infos[min(originals)].path
    twin = copy.deepcopy(model).to(torch.float64)
    for m in (model, twin):
        surrogate = get_module(m, path)
        for k in (0, 1):
            assert surrogate._neighbours[k] is get_module(m, neighbour_path(m, surrogate, k))
    surrogate, before = get_module(twin, path), get_module(model, path).synthesized()
    assert all(w.dtype == torch.float64 for w in surrogate.synthesized().values())
    with torch.no_grad():
        surrogate._neighbours[0].conv1.weight.add_(1.0)  # edit the twin's neighbour: its surrogate follows
    after = surrogate.synthesized()["conv1.weight"]
    assert not torch.allclose(after.float(), before["conv1.weight"])
    torch.testing.assert_close(get_module(model, path).synthesized()["conv1.weight"], before["conv1.weight"])
    assert twin.eval()(x.double()).dtype == torch.float64


@pytest.mark.parametrize("name", ["resnet32", "timm_resnet50"])
@pytest.mark.parametrize("surrogate", ["lite", "full"])
def test_state_dict_round_trip(name, surrogate):
    model, _, _, x = replaced(name, surrogate, fusion="channel", adapt="learned")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).square().mean().backward()
    opt.step()
    fresh, _, _, _ = replaced(name, surrogate, fusion="channel", adapt="learned")
    fresh.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model.eval()(x))


@pytest.mark.parametrize("how", ["assign", "overwrite", "swap"])
def test_ties_survive_new_parameter_objects(how):
    """Loading with assign=True or converting with new Parameter objects: the surrogate follows the model's tensors."""
    model, _, _, x = replaced("resnet32", "lite", fusion="channel")
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    if how == "assign":
        twin.load_state_dict(model.state_dict(), assign=True)
    else:
        flag = {"overwrite": torch.__future__.set_overwrite_module_params_on_conversion,
                "swap": torch.__future__.set_swap_module_params_on_conversion}[how]
        flag(True)
        try:
            twin.load_state_dict(model.state_dict())
            twin = twin.double()
        finally:
            flag(False)
    with torch.no_grad():
        torch.testing.assert_close(twin.eval()(x.to(next(twin.parameters()).dtype)).float(), model.eval()(x),
                                   rtol=1e-5, atol=1e-5)


def flops(module, x) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("name", list(MODELS))
def test_lite_costs_fewer_flops_than_the_block(name):
    model, originals, infos, x = replaced(name, "lite")
    inputs = block_inputs(model.eval(), [infos[i].path for i in originals], x)
    for i, original in originals.items():
        h = inputs[infos[i].path]
        assert flops(get_module(model, infos[i].path), h) < flops(original.eval(), h)
    full, _, _, _ = replaced(name, "full")
    assert flops(model, x) < flops(full.eval(), x)
