"""Fusion: synthesize a replaced block's weights from its two neighbours (docs/method.md, "Fusion").

For every weight `name` of the surrogate, `W = a * A(prev[name]) + b * A(next[name])`, where `A`
(`adapt`) maps a neighbour's tensor onto the target's channel counts. Channel dims are the tensor's
`TensorLayout` (repl/families/contract.py), declared by its block family: by default 0 (output) and
1 (input, for tensors of rank >= 2), `[in, out]` storage swaps them; the remaining (kernel) dims must agree.

`tile` adapt: along each mismatched channel dim, target channel j reads source channel j mod S (the
first T of a larger source, a cyclic repeat of a smaller one). A weight with fan-in
F = C_in * k_h * k_w gives outputs of variance F * Var(w) * E[x^2] (independent zero-mean weights,
independent inputs); keeping F * Var(w) unchanged when C_in goes from S to T means scaling the
weight by sqrt(S / T). Only the input dim changes the fan-in, so out-dim tiling is not rescaled.

`learned` adapt: the same gather, then a learned gain per target channel on each mismatched dim
(initialised to the tile factor, so training starts exactly at `tile`). It costs T parameters per
dim, where a full [T, S] mixing matrix would cost T * S: at a ResNet-50 bottleneck boundary
(conv3 256 -> 512 outputs) that is 131k parameters, twice the tensor it feeds. Dims that already
agree get no map in either mode.

`lstsq` init (`Fusion.fit`): the coefficients minimise sum_t ||a * P_t + b * N_t - W_t||_F^2 over the
tensors t that share them (P, N: the adapted neighbour tensors at the adapters' initial state; W: the
replaced block's own tensor). Setting the gradient to zero gives the normal equations
    [<P,P> <P,N>; <N,P> <N,N>] [a; b] = [<P,W>; <N,W>],
inner products summed over the tensors of one coefficient (`scalar`: every tensor of the block, `tensor`:
one tensor, `channel`: one output channel of one tensor). They are solved in float64 with the
pseudo-inverse, which gives the minimum-norm minimiser when the system is singular (collinear or zero
sources): singular values below 1e-10 of the largest are dropped. The Gram matrix's singular values are
the squares of the sources', so this treats sources whose angle is below ~1e-5 rad as collinear: float32
rounding of exactly collinear tensors (relative error ~1e-7) is far inside, real neighbours far outside.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import torch
from torch import nn
from torch.nn.utils import parametrize

from repl.errors import UnsupportedModelError
from repl.families.contract import DEFAULT_LAYOUT, BlockInfo, TensorLayout
from repl.method.blend import blend, blendable, pays
from repl.method.config import Adapt, FusionMode, ReplConfig

SLOTS = ("prev", "next")  # neighbour i-1 (coefficients `a`) and i+1 (coefficients `b`)


def compatible(source: Sequence[int], target: Sequence[int], layout: TensorLayout = DEFAULT_LAYOUT) -> bool:
    """True when `source` can be adapted to `target`: same rank and same non-channel dims."""
    channels = layout.channel_dims(len(target))
    return len(source) == len(target) and all(source[d] == target[d] for d in range(len(target)) if d not in channels)


def pairable(block: BlockInfo, neighbour: BlockInfo) -> bool:
    """Whether fusion can synthesize `block` from `neighbour`: they share a synthesizable tensor by name, and
    every tensor they share by name is adaptable (same rank, same kernel dims), so none of the neighbour's
    tensors would be passed over. Blocks of one kind pair across stage boundaries; a BasicBlock next to a
    Bottleneck (3x3 against 1x1 `conv1`) or a conv block next to an attention block (no shared name) do not.
    """
    theirs = dict(neighbour.param_shapes)
    shared = [(name, shape) for name, shape in block.param_shapes if block.may_synthesize(name) and name in theirs]
    return bool(shared) and all(compatible(theirs[name], shape, block.layout(name)) for name, shape in shared)


def tile_index(target: int, source: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Indices of the source channels read by each target channel: j mod `source`."""
    return torch.arange(target, device=device) % source


def tile(t: torch.Tensor, dim: int, target: int) -> torch.Tensor:
    """`t` with `dim` cut or cyclically repeated to `target` entries: `t.index_select(dim, tile_index(target, S))`
    without the gather. Cutting is a view (no copy, nothing saved for backward); growing repeats, and the
    gradient of a repeat is a sum over the copies, where the gather's was an index_add_ (scattered writes,
    several times slower on a CPU)."""
    source = t.shape[dim]
    if target > source:
        repeats = [1] * t.dim()
        repeats[dim] = -(-target // source)
        t = t.repeat(repeats)
    return t.narrow(dim, 0, target)


def tile_gains(source: torch.Size, target: torch.Size, layout: TensorLayout = DEFAULT_LAYOUT) -> Dict[int, float]:
    """Tile factor per mismatched channel dim: sqrt(S/T) on the input dim (fan-in kept), 1 on the output dim."""
    channels = layout.channel_dims(len(target))
    dims = [d for d in channels if source[d] != target[d]]
    return {d: math.sqrt(source[d] / target[d]) if channels[d] == "in" else 1.0 for d in dims}


def _broadcast_shape(dim: int, size: int, rank: int) -> Tuple[int, ...]:
    shape = [1] * rank
    shape[dim] = size
    return tuple(shape)


class ChannelAdapter(nn.Module):
    """A: gathers a neighbour's tensor onto the target's channel counts and rescales it (tile or learned)."""

    def __init__(self, source: torch.Size, target: torch.Size, learned: bool, like: torch.Tensor,
                 layout: TensorLayout = DEFAULT_LAYOUT) -> None:
        super().__init__()
        gains = tile_gains(source, target, layout)
        self.shapes = (tuple(source), tuple(target))
        self.dims = tuple(gains)
        self.dim_names = layout.channel_dims(len(target))  # dim -> "out" | "in", naming the learned gains
        self.sizes = {d: target[d] for d in self.dims}  # the target's size of each mismatched dim (`tile`)
        self.grows = tuple(d for d in self.dims if target[d] > source[d])  # dims `tile` repeats (the rest it cuts)
        self.learned = learned
        if learned:
            for d, init in gains.items():
                shape = _broadcast_shape(d, target[d], len(target))
                setattr(self, f"gain_{self.dim_names[d]}", nn.Parameter(torch.full(shape, init, device=like.device, dtype=like.dtype)))
        else:
            self.scale = math.prod(gains.values())

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        for d in self.dims:
            t = tile(t, d, self.sizes[d])
        if self.learned:
            for d in self.dims:
                t = t * getattr(self, f"gain_{self.dim_names[d]}")
        elif self.scale != 1.0:
            t = t * self.scale
        return t

    def term(self, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """`c * self(t)`, ordered to touch and keep as little as the shapes allow: the tile factor is folded into
        `c`, cuts (views) come first, and `c` is applied before the growing repeats where it broadcasts alike over
        source and target. The product then saves `t` or a view of it (the neighbour's parameter, in memory
        anyway) instead of a weight-sized copy, and multiplies the smaller tensor."""
        if self.learned or not self.premultiplies(c.shape):
            return self(t) * c
        for d in self.dims:
            if d not in self.grows:
                t = tile(t, d, self.sizes[d])
        t = t * (c * self.scale if self.scale != 1.0 else c)
        for d in self.grows:
            t = tile(t, d, self.sizes[d])
        return t

    def premultiplies(self, coefficient: Sequence[int]) -> bool:
        """Whether `term` applies a coefficient of this shape before the repeats: it spans no dim the tile grows."""
        return not self.learned and not any(d in self.grows and size > 1 for d, size in enumerate(coefficient))

    def extra_repr(self) -> str:
        how = "learned gains" if self.learned else f"tile x{self.scale:.4g}"
        return f"{self.shapes[0]} -> {self.shapes[1]}, {how}"


def _out_shape(target: torch.Tensor, layout: TensorLayout) -> Tuple[int, ...]:
    """Shape of a per-output-channel coefficient of `target`: its output dim, 1 elsewhere."""
    out = next(d for d, role in layout.channel_dims(target.dim()).items() if role == "out")
    return _broadcast_shape(out, target.shape[out], target.dim())


def _key(name: str) -> str:
    return name.replace(".", "_")


LSTSQ_RTOL = 1e-10  # Fusion.fit: relative singular value of the Gram matrix below which it counts as singular


def _inner(x: torch.Tensor, y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """<x, y> summed down to a coefficient's `shape` (() for a scalar, [C, 1, ...] per output channel)."""
    product = x * y
    if len(shape) == 0:
        return product.sum()
    summed = [d for d in range(len(shape)) if shape[d] == 1]
    return product.sum(dim=summed, keepdim=True) if summed else product  # sum(dim=[]) would sum every dim


class Fusion(nn.Module):
    """The learnable part of one replaced block: coefficients (a for prev, b for next) and adapters.

    Calling it with the two neighbour modules returns {name: synthesized tensor}; neighbour weights
    are read at call time, so the result always follows the live (trained) neighbours.
    """

    def __init__(self, params: Dict[str, torch.Tensor], neighbours: Sequence[nn.Module], cfg: ReplConfig,
                 layouts: Optional[Mapping[str, TensorLayout]] = None, block: str = "") -> None:
        """Fusion for those of the block's `params` that a neighbour has (same name, adaptable shape);
        `layouts` gives a tensor's channel dims where they are not DEFAULT_LAYOUT's; `block` is the replaced
        block's path, for messages."""
        super().__init__()
        self.block = block
        self.mode = cfg.fusion
        self.neighbor_grad = cfg.neighbor_grad
        self.a = nn.ParameterDict()  # coefficients of prev, keyed "block" (scalar) or by tensor
        self.b = nn.ParameterDict()  # coefficients of next
        self.adapters = nn.ModuleDict()
        self.sources: Dict[str, Tuple[str, ...]] = {}  # synthesized name -> slots that provide it
        self._terms: Dict[str, Tuple[Tuple[int, str, str], ...]] = {}  # name -> (slot index, coefficient key, adapter key)
        self._paths: Dict[str, Tuple[Tuple[str, ...], str]] = {}  # name -> (submodule names, leaf), for `_source`
        self._blended: Set[str] = set()  # large, two adapter-free terms, scalar coefficients: made by `blend`
        self.elements = 0  # elements of the tensors one call synthesizes
        available = [dict(neighbour.named_parameters()) for neighbour in neighbours]
        layouts = layouts or {}
        for name, target in params.items():
            layout = layouts.get(name, DEFAULT_LAYOUT)
            slots = [i for i, have in enumerate(available)
                     if name in have and compatible(have[name].shape, target.shape, layout)]
            if not slots:
                continue
            self.sources[name] = tuple(SLOTS[i] for i in slots)
            key = "block" if self.mode == FusionMode.SCALAR else _key(name)
            terms = []
            for i in slots:
                coefficients = (self.a, self.b)[i]
                if key not in coefficients:
                    shape = _out_shape(target, layout) if self.mode == FusionMode.CHANNEL else ()
                    init = (cfg.init_a, cfg.init_b)[i]
                    coefficients[key] = nn.Parameter(torch.full(shape, init, device=target.device, dtype=target.dtype))
                adapter = ""
                if available[i][name].shape != target.shape:
                    adapter = f"{SLOTS[i]}_{_key(name)}"
                    self.adapters[adapter] = ChannelAdapter(available[i][name].shape, target.shape,
                                                            cfg.adapt == Adapt.LEARNED, target, layout)
                terms.append((i, key, adapter))
            self._terms[name] = tuple(terms)
            if (len(terms) == 2 and not any(adapter for _, _, adapter in terms) and self.mode != FusionMode.CHANNEL
                    and pays(target.numel())):
                self._blended.add(name)
            self.elements += target.numel()
            *owner, leaf = name.split(".")
            self._paths[name] = (tuple(owner), leaf)
        # Whether the synthesis's own graph saves weight-sized copies (an adapter's gathered tensor, where its
        # coefficient cannot go before the repeat): then it is worth recomputing in backward (Surrogate.forward).
        self.keeps_copies = any(not self.adapters[adapter].premultiplies((self.a, self.b)[i][key].shape)
                                for terms in self._terms.values() for i, key, adapter in terms if adapter)

    @torch.no_grad()
    def fit(self, targets: Mapping[str, torch.Tensor], neighbours: Sequence[nn.Module]) -> None:
        """Set the coefficients, in place, to the least-squares fit of `targets` (the replaced block's own
        tensors, by name) from the adapted neighbour tensors: the module docstring derives the system."""
        coefficients = (self.a, self.b)
        systems: Dict[str, Tuple[List[int], torch.Tensor, torch.Tensor]] = {}  # key -> (slots, Gram, right side)
        for name, terms in self._terms.items():
            target = targets[name].detach().double()
            sources = {i: self._adapted(neighbours, name, i, adapter).double() for i, _, adapter in terms}
            for i, key, _ in terms:
                if key not in systems:
                    slots = [j for j in range(len(SLOTS)) if key in coefficients[j]]
                    shape = coefficients[slots[0]][key].shape
                    systems[key] = (slots, target.new_zeros(*shape, len(slots), len(slots)), target.new_zeros(*shape, len(slots)))
                slots, gram, right = systems[key]
                row = slots.index(i)
                right[..., row] += _inner(sources[i], target, right.shape[:-1])
                for j, source in sources.items():
                    gram[..., row, slots.index(j)] += _inner(sources[i], source, right.shape[:-1])
        for key, (slots, gram, right) in systems.items():
            solution = (torch.linalg.pinv(gram, rtol=LSTSQ_RTOL, hermitian=True) @ right.unsqueeze(-1)).squeeze(-1)
            for row, j in enumerate(slots):
                coefficients[j][key].copy_(solution[..., row])

    def _adapted(self, neighbours: Sequence[nn.Module], name: str, slot: int, adapter: str) -> torch.Tensor:
        """A(neighbour[name]) as `weight` uses it."""
        t = self._source(neighbours, slot, name)
        return self.adapters[adapter](t) if adapter else t

    def forward(self, neighbours: Sequence[nn.Module]) -> Dict[str, torch.Tensor]:
        return {name: self.weight(neighbours, name) for name in self._terms}

    def weight(self, neighbours: Sequence[nn.Module], name: str, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One synthesized tensor, `a * A(prev[name]) + b * A(next[name])` (or the single available term).

        With `out` (a tensor of the result's shape, e.g. the storage of a weight freed after the forward) the
        result is written into it: computed there in place where the dtypes agree (the same kernels, so the
        same bits, without a temporary and a copy), else computed and then copied (cast) into it.
        """
        coefficients = (self.a, self.b)
        grad = torch.is_grad_enabled()
        if grad and out is None and name in self._blended:
            (i, key, _), (j, key2, _) = self._terms[name]
            p, n = self._source(neighbours, i, name), self._source(neighbours, j, name)
            if not self.neighbor_grad:
                p, n = p.detach(), n.detach()
            a, b = coefficients[i][key], coefficients[j][key2]
            if blendable(p, a, n, b):  # one autograd node: coefficient gradients as dot products (repl/method/blend.py)
                return blend(p, a, n, b)
        total = None
        for i, key, adapter in self._terms[name]:
            t = self._source(neighbours, i, name)
            if not (self.neighbor_grad and grad):  # (under no_grad: so that a cut, a view, is
                t = t.detach()  # not a grad-requiring view without grad_fn, which module hooks cannot handle)
            c = coefficients[i][key]
            if adapter:
                term = self.adapters[adapter].term(t, c)
                total = term if total is None else total.add_(term) if total is out else total + term
                continue
            # a * P + b * N as one mul and one addcmul: one op and one temporary fewer per tensor than mul+mul+add
            if total is None:
                in_place = out is not None and out.dtype == t.dtype == c.dtype and not grad
                total = torch.mul(t, c, out=out) if in_place else t * c
            else:
                total = total.addcmul_(t, c) if total is out else torch.addcmul(total, t, c)
        if out is not None and total is not out:
            out.copy_(total)
            return out
        return total

    def _source(self, neighbours: Sequence[nn.Module], slot: int, name: str) -> torch.Tensor:
        """The live tensor `name` of neighbour `slot` (0: prev, 1: next), read by dict lookups (what get_parameter
        does, minus its string work).

        UnsupportedModelError where it is no longer a parameter there (`missing`): e.g. a parametrization added to
        the neighbour after apply_replacement, which turns its `weight` into a computed attribute."""
        owner, leaf = self._paths[name]
        module = neighbours[slot]
        try:
            for part in owner:
                module = module._modules[part]
            tensor = module._parameters[leaf]
        except KeyError:
            tensor = None
        if tensor is None:
            raise self.missing(neighbours[slot], slot, name)
        return tensor

    def missing(self, neighbour: nn.Module, slot: int, name: str) -> UnsupportedModelError:
        """The error for a tensor `name` that is not a parameter of `neighbour` (in `slot`) any more."""
        owner, leaf = name.rpartition(".")[::2]
        try:
            module = neighbour.get_submodule(owner)
        except AttributeError:
            module = None
        why = ("was parametrized (torch.nn.utils.parametrize: weight_norm, spectral_norm, ...)"
               if module is not None and parametrize.is_parametrized(module, leaf) else "is no longer a parameter")
        which = ("before", "after")[slot]
        block = self.block or "the replaced block"
        return UnsupportedModelError(
            f"{name} of the block {which} {block} {why} after apply_replacement, but the surrogate of {block} "
            f"synthesizes its own {name} from that parameter. Apply parametrizations (and any other change to the "
            "model's parameters) before apply_replacement: a parametrized tensor's own parameters are then synthesized")

    def extra_repr(self) -> str:
        return f"mode={self.mode}, neighbor_grad={self.neighbor_grad}, tensors={len(self.sources)}"


def fusion_parameters(model: nn.Module) -> List[nn.Parameter]:
    """The learnable parameters of every `Fusion` in `model` (coefficients, learned gains), each once.

    The optimizer never weight-decays them: decay would pull `channel` coefficients and learned gains
    towards 0 while scalar and tensor coefficients are left alone, and the fusion ablations would no
    longer compare like with like.
    """
    found: Dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, Fusion):
            for param in module.parameters():
                found.setdefault(id(param), param)
    return list(found.values())
