"""The block-family contract (docs/families.md): what a model family tells the method about each block.

A family is a `FamilyAdapter`: `detect(model)` says whether the model is one of its own, and
`enumerate(model)` lists its block sequence as `BlockInfo`s, in forward order. A `BlockInfo` says
everything the generic tools (plan, fusion, surrogates, baselines) ask about a block, so none of them
reads a family's attribute names or tests a family's name:

- where the block is and its shapes (`path`, `in_channels`, `out_channels`, `stride`, `param_shapes`);
- which of its tensors a surrogate may synthesize (`synthesizable`) and how each is laid out
  (`layouts`: output-channel dim, input-channel dim, e.g. `[in, out]` storage of HF GPT-2's `Conv1D`);
- how it is called (`call`: the hidden state is the first positional argument, keyword arguments
  are passed through, and which element of a tuple output is the hidden state);
- how a baseline computes its residual and skips it (`residual`: `Residual.BRANCH` or `Residual.FORWARD`);
- what its `lite` sub-layer is (`lite`: the builder and the block modules it accounts for).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Tuple

import torch
from torch import nn

ParamShapes = Tuple[Tuple[str, Tuple[int, ...]], ...]


@dataclass(frozen=True)
class TensorLayout:
    """Which dims of a weight are its output and input channels; the other dims (kernel) must agree to fuse.

    The default is PyTorch's `[out, in, *kernel]` (Linear, Conv). HF GPT-2's `Conv1D` stores `[in, out]`:
    `TensorLayout(out_dim=1, in_dim=0)`. `in_dim` is only read for tensors of rank >= 2.
    """

    out_dim: int = 0
    in_dim: int = 1

    def __post_init__(self) -> None:
        if self.out_dim == self.in_dim or min(self.out_dim, self.in_dim) < 0:
            raise ValueError(f"TensorLayout needs two distinct non-negative dims, got out={self.out_dim}, in={self.in_dim}")

    def channel_dims(self, rank: int) -> Dict[int, str]:
        """{dim: "out" | "in"} of the channel dims a tensor of this rank has, in dim order."""
        dims = {self.out_dim: "out", self.in_dim: "in"} if rank >= 2 else {0: "out"}
        return {d: dims[d] for d in sorted(dims) if d < rank}


DEFAULT_LAYOUT = TensorLayout()


class Residual(enum.Enum):
    """How a baseline computes a block's residual, and what the block is when the residual is skipped.

    BRANCH: the block is `out_act(branch(x) + shortcut(x))` (a ResNet block): the residual is its
        `branch` modules run in order; skipped, it is `out_act(shortcut(x))` with a projection
        shortcut, else the identity.
    FORWARD: the block is `x + f(x)` computed by its own forward (pre-norm transformer, ConvNeXt):
        the residual is `forward(x) - x`; skipped, it is the identity.
    """

    BRANCH = "branch"
    FORWARD = "forward"


def no_extras(kwargs: Mapping[str, Any]) -> Tuple[Any, ...]:
    """A skipped block returns nothing besides its hidden state."""
    return ()


@dataclass(frozen=True)
class CallConvention:
    """How a block is called and what it returns.

    The hidden state is the block's first positional argument; the other arguments (attention masks,
    `position_embeddings`, and positional ones: HF GPT2Model passes cache, mask and encoder states
    positionally) are passed through to the block untouched. `hidden_output`
    is None when the block returns the hidden state itself, else the index of the hidden state in the
    tuple it returns (HF decoder layers: 0). A skipped tuple-returning block returns the tuple
    `hidden_state, *skipped_extras(kwargs)` (e.g. `None` for a KV cache it never filled).
    """

    hidden_output: Optional[int] = None
    skipped_extras: Callable[[Mapping[str, Any]], Tuple[Any, ...]] = no_extras

    def hidden(self, output: Any) -> torch.Tensor:
        """The hidden state out of what the block returned."""
        return output if self.hidden_output is None else output[self.hidden_output]

    def with_hidden(self, output: Any, hidden: torch.Tensor) -> Any:
        """What the block returned, with its hidden state replaced by `hidden`."""
        if self.hidden_output is None:
            return hidden
        items = list(output)
        items[self.hidden_output] = hidden
        return tuple(items)

    def skipped(self, hidden: torch.Tensor, kwargs: Mapping[str, Any]) -> Any:
        """What a skipped block returns, given the hidden state it passes on."""
        if self.hidden_output is None:
            return hidden
        items = list(self.skipped_extras(kwargs))
        items.insert(self.hidden_output, hidden)
        return tuple(items)


TENSOR_CALL = CallConvention()

LiteBuilder = Callable[[nn.Module, "BlockInfo"], nn.Module]


@dataclass(frozen=True)
class LiteOperator:
    """A block's `lite` sub-layer: `build(block, info)` makes it from the block's own modules (consuming
    the block), and `known` are the block modules it accounts for; a branch module outside them would be
    lost, so `repl.surrogate=lite` refuses that block."""

    known: FrozenSet[str]
    build: LiteBuilder


@dataclass(frozen=True)
class BlockInfo:
    """One block of the sequence: where it is, its shapes, its tensors, how it is called and skipped."""

    index: int  # position in the block sequence
    path: str  # dotted module path, e.g. "layer2.0"
    family: str  # the FamilyAdapter's name
    kind: str  # the block type within its family ("basic", "bottleneck", "transformer"), for messages
    in_channels: int
    out_channels: int
    stride: int
    has_projection: bool  # owns a shortcut projection (downsample)
    param_shapes: ParamShapes  # (relative name, shape) of the block's own parameters, sorted
    branch: Tuple[str, ...] = ()  # relative names of the block's modules in forward order (BRANCH: the residual branch)
    shortcut: Optional[str] = None  # relative name of the projection shortcut, None for identity
    out_act: Optional[str] = None  # relative name of the activation applied after the residual sum
    stride_conv: Optional[str] = None  # the branch conv that carries the stride (None: stride 1, or an anti-aliasing `aa`)
    residual: Residual = Residual.BRANCH
    call: CallConvention = TENSOR_CALL
    synthesizable: Optional[FrozenSet[str]] = None  # parameter names a surrogate may synthesize; None: all
    layouts: Tuple[Tuple[str, TensorLayout], ...] = ()  # parameters whose layout is not DEFAULT_LAYOUT
    lite: Optional[LiteOperator] = field(default=None, compare=False)

    def may_synthesize(self, name: str) -> bool:
        """Whether the parameter `name` (relative to the block) may be synthesized from the neighbours."""
        return self.synthesizable is None or name in self.synthesizable

    def layout(self, name: str) -> TensorLayout:
        """The layout of the parameter `name` (relative to the block)."""
        return dict(self.layouts).get(name, DEFAULT_LAYOUT)


def param_shapes(block: nn.Module) -> ParamShapes:
    """(relative name, shape) of every parameter of `block`, sorted: `BlockInfo.param_shapes`."""
    return tuple(sorted((n, tuple(p.shape)) for n, p in block.named_parameters()))


def is_instance_of_model(model: nn.Module, classes: Callable[[], Tuple[Any, ...]]) -> bool:
    """Whether `model` is an instance of the model class `classes()` returns first; False when its package
    (timm, transformers) is not installed, so detection never fails for a family the user does not use."""
    try:
        model_class = classes()[0]
    except ImportError:
        return False
    return isinstance(model, model_class)


@dataclass(frozen=True)
class FamilyAdapter:
    """How to recognise a model family and list its blocks."""

    name: str
    description: str  # what the user should pass, named in the unsupported-model error
    detect: Callable[[nn.Module], bool]
    enumerate: Callable[[nn.Module], List[BlockInfo]]
