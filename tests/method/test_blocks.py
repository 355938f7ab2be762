"""Block discovery: counts, shapes, strides, and that each BlockInfo's description recomposes the block."""
import copy

import pytest
import timm
import torch
import torchvision
from torch import nn

from repl.errors import UnsupportedModelError
from repl.families import (
    FAMILIES,
    BlockInfo,
    FamilyAdapter,
    discover_blocks,
    get_module,
    register_family,
    set_module,
)
from repl.models.cifar_resnet import CifarResNet
from tests.method.models import BUILDERS, INPUT_SIZE


def recompose(block: nn.Module, info: BlockInfo, x: torch.Tensor) -> torch.Tensor:
    """The block's output computed only from the BlockInfo's names."""
    h = x
    for name in info.branch:
        h = getattr(block, name)(h)
    shortcut = x if info.shortcut is None else getattr(block, info.shortcut)(x)
    return getattr(block, info.out_act)(h + shortcut)


def block_io(model: nn.Module, blocks, x: torch.Tensor):
    """Input and output of every block during one eval forward."""
    seen = {}

    def record(path):
        return lambda module, inputs, output: seen.__setitem__(path, (inputs[0].clone(), output.clone()))

    hooks = [get_module(model, b.path).register_forward_hook(record(b.path)) for b in blocks]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return seen


FAMILY = {  # name: (family, number of blocks)
    "resnet32": ("cifar_resnet", 15),
    "resnet110": ("cifar_resnet", 54),
    "tv_resnet50": ("torchvision_resnet", 16),
    "timm_resnet18": ("timm_resnet", 8),
    "timm_resnet50": ("timm_resnet", 16),
}
MODELS = {name: (BUILDERS[name], *FAMILY[name], INPUT_SIZE[name]) for name in FAMILY}


@pytest.mark.parametrize("name", list(MODELS))
def test_discovery_counts_order_and_family(name):
    build, family, count, _ = MODELS[name]
    model = build()
    blocks = discover_blocks(model)
    assert len(blocks) == count
    assert [b.index for b in blocks] == list(range(count))
    assert {b.family for b in blocks} == {family}
    assert blocks[0].path == "layer1.0"
    last_stage = "layer4" if hasattr(model, "layer4") else "layer3"
    assert blocks[-1].path == f"{last_stage}.{len(getattr(model, last_stage)) - 1}"
    for b in blocks:
        module = get_module(model, b.path)
        assert b.param_shapes == tuple(sorted((n, tuple(p.shape)) for n, p in module.named_parameters()))
        assert b.has_projection == (getattr(module, "downsample", None) is not None)


@pytest.mark.parametrize("name", list(MODELS))
def test_description_recomposes_every_block(name):
    build, _, _, size = MODELS[name]
    model = build()
    blocks = discover_blocks(model)
    for block, (x, y) in zip(blocks, block_io(model, blocks, torch.randn(2, 3, size, size)).values()):
        module = get_module(model, block.path)
        with torch.no_grad():
            torch.testing.assert_close(recompose(module, block, x), y)
        assert y.shape[1] == block.out_channels and x.shape[1] == block.in_channels
        assert x.shape[-1] == y.shape[-1] * block.stride


def test_cifar_resnet32_stage_boundaries():
    blocks = discover_blocks(CifarResNet(32))
    assert [b.index for b in blocks if b.has_projection] == [5, 10]
    assert [(b.stride, b.stride_conv) for b in blocks if b.has_projection] == [(2, "conv1"), (2, "conv1")]
    assert all(b.kind == "basic" and b.stride_conv is None for b in blocks if not b.has_projection)


@pytest.mark.parametrize("build", [lambda: torchvision.models.resnet50(), lambda: timm.create_model("resnet50")])
def test_bottleneck_stride_is_on_the_3x3_conv(build):
    blocks = discover_blocks(build())
    strided = [b for b in blocks if b.stride == 2]
    assert [b.index for b in strided] == [3, 7, 13]
    assert {b.stride_conv for b in strided} == {"conv2"} and {b.kind for b in blocks} == {"bottleneck"}
    assert blocks[0].has_projection and blocks[0].stride == 1  # channel change 64 -> 256 only


def test_timm_regularisers_are_part_of_the_branch():
    model = timm.create_model("resnet50", drop_path_rate=0.1, drop_block_rate=0.1)
    blocks = discover_blocks(model)
    assert "drop_path" in blocks[-1].branch
    assert any("drop_block" in b.branch for b in blocks)
    assert all("aa" not in b.branch and "se" not in b.branch for b in blocks)


def test_timm_anti_aliased_blocks_work_with_full_and_are_refused_by_lite():
    """resnetaa50 downsamples in an `aa` AvgPool after conv2, not in a conv: `full` runs the block as it is."""
    from repl import apply_replacement, bake
    from repl.errors import ConfigError

    torch.manual_seed(0)
    model = timm.create_model("resnetaa50", num_classes=10)
    blocks = discover_blocks(model)
    assert [(b.index, b.stride_conv, "aa" in b.branch) for b in blocks if b.stride == 2] == \
        [(3, None, True), (7, None, True), (13, None, True)]
    with pytest.raises(ConfigError, match="repl.surrogate=lite cannot carry aa of block layer2.0"):
        apply_replacement(copy.deepcopy(model), select="explicit", blocks=[3])
    plan = apply_replacement(model, select="explicit", blocks=[3, 7], surrogate="full")
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    assert model.get_submodule("layer2.0").fusion.a["block"].grad is not None
    model.eval()
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(bake(model).eval()(x), out, rtol=1e-4, atol=1e-5)  # float32 rounding of the synthesis
    assert plan.blocks == [3, 7] and out.shape == (2, 10)


def test_unsupported_model_names_every_family():
    with pytest.raises(UnsupportedModelError) as err:
        discover_blocks(nn.Sequential(nn.Linear(4, 4)))
    message = str(err.value)
    assert "\n" not in message
    for adapter in FAMILIES:
        assert adapter.name in message


def test_unknown_block_type_inside_a_supported_family_is_refused():
    model = CifarResNet(20)
    model.layer2[1] = nn.Identity()
    with pytest.raises(UnsupportedModelError, match="layer2.1 is a Identity"):
        discover_blocks(model)


def test_a_new_family_registers_without_touching_the_core():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))

    def enumerate_toy(model):
        return [
            BlockInfo(i, f"blocks.{i}", "toy", "linear", 4, 4, 1, False, (("bias", (4,)), ("weight", (4, 4))))
            for i in range(len(model.blocks))
        ]

    register_family(FamilyAdapter("toy", "test-only", lambda m: isinstance(m, Toy), enumerate_toy))
    try:
        assert [b.path for b in discover_blocks(Toy())] == ["blocks.0", "blocks.1"]
        with pytest.raises(ValueError):
            register_family(FamilyAdapter("toy", "again", lambda m: False, enumerate_toy))
    finally:
        FAMILIES.pop()


def test_get_and_set_module_by_dotted_path():
    model = CifarResNet(20)
    old = get_module(model, "layer2.1")
    set_module(model, "layer2.1", nn.Identity())
    assert isinstance(model.layer2[1], nn.Identity) and old is not model.layer2[1]
    assert not any(k.startswith("layer2.1.") for k in model.state_dict())
    with pytest.raises(AttributeError):
        set_module(model, "layer2.9", nn.Identity())
    with pytest.raises(ValueError):
        set_module(model, "", nn.Identity())
