"""Block scores for `repl.select=similarity`: how well each block lends itself to being synthesized (docs/method.md).

The plan (plan.py) takes the k valid blocks with the largest total score. Only the blocks a plan may
choose (`plan.considered`: not first or last, pairable with both neighbours) are scored.

`weight`: the mean, over the block's synthesizable tensors that both neighbours have, of the cosine
similarity between the two neighbours' tensors, each first adapted to the block's shape by `tile` (what
fusion does; the tile rescale does not change a cosine). A tensor that is zero in either neighbour (a
bias at init) has no direction and is left out; a block with none left scores 0. Neighbours that are alike
mean the weight field is smooth around the block, which is what `a * prev + b * next` assumes.

`cka`: linear CKA (Kornblith et al. 2019) between the block's input and its output on the given inputs,
each example's hidden state flattened. High CKA: the block re-expresses its input almost linearly, so
the network loses least when a cheap operator stands in for it (the criterion of layer-pruning work such
as ShortGPT's block influence, 1 - cos(input, output), with CKA in place of the cosine: it compares
representations of different widths and strides). Input against output isolates the block itself; block
i-1's output against block i+1's would also count block i+1, which stays trained. CKA is estimated per
batch with the unbiased HSIC estimator (Song et al. 2012), summed over batches (minibatch CKA, Nguyen et
al. 2021), so memory is one batch's [B, B] Gram matrices per block; a batch needs 4 examples or more.
Under an initialized process group the HSIC sums are added over all processes, so every rank scores the
same and makes the same plan (every rank must call it, as every rank applies the method).
"""
from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from repl.errors import ConfigError
from repl.families import BlockInfo, get_module
from repl.method.config import CHOICES, Similarity
from repl.method.fusion import ChannelAdapter, compatible
from repl.method.plan import considered

MEASURES = CHOICES["similarity"]  # the values of repl.similarity
MIN_BATCH = 4  # the unbiased HSIC estimator divides by n - 3


def block_scores(model: nn.Module, blocks: Sequence[BlockInfo], measure: str,
                 inputs: Optional[Sequence[Any]] = None) -> Dict[int, float]:
    """{block index: score} for every block a plan may choose; higher means a better block to replace.

    measure: `weight` (reads the weights only) or `cka` (runs `model` on each of `inputs`, a list of model
    inputs: a tensor is called as model(x), a mapping as model(**x); in eval mode under no_grad, each
    module's mode restored afterwards)."""
    if any(p.is_meta for p in model.parameters()):
        raise ConfigError(f"repl.select=similarity (repl.similarity={measure}) needs the model's weights, and this "
                          "model is on the meta device: build it with its weights, or use another repl.select")
    chosen = [i for i, ok in enumerate(considered(blocks)) if ok]
    modules = [get_module(model, info.path) for info in blocks]
    if measure == Similarity.WEIGHT:
        return {i: weight_score(modules[i - 1], modules[i + 1], blocks[i]) for i in chosen}
    if measure == Similarity.CKA:
        if not inputs:
            raise ConfigError("repl.similarity=cka needs model inputs: pass apply_replacement(..., inputs=[batch, ...])")
        return _cka_scores(model, {i: modules[i] for i in chosen}, {i: blocks[i] for i in chosen}, inputs)
    raise ConfigError(f"repl.similarity={measure!r} is not supported; choose one of {', '.join(MEASURES)}")


@torch.no_grad()
def weight_score(prev: nn.Module, nxt: nn.Module, info: BlockInfo) -> float:
    """Mean cosine similarity of the two neighbours' same-named synthesizable tensors, tiled to the block's shapes."""
    theirs = dict(prev.named_parameters()), dict(nxt.named_parameters())
    cosines: List[float] = []
    for name, shape in info.param_shapes:
        layout = info.layout(name)
        if not info.may_synthesize(name) or not all(
                name in have and compatible(have[name].shape, shape, layout) for have in theirs):
            continue
        p, n = (_tiled(have[name].detach(), torch.Size(shape), layout).double().flatten() for have in theirs)
        norms = p.norm() * n.norm()
        if norms > 0:
            cosines.append(float(p @ n / norms))
    return sum(cosines) / len(cosines) if cosines else 0.0


def _tiled(source: torch.Tensor, target: torch.Size, layout: Any) -> torch.Tensor:
    """`source` adapted to `target` by fusion's tile map."""
    if source.shape == target:
        return source
    return ChannelAdapter(source.shape, target, learned=False, like=source, layout=layout)(source)


def linear_cka(hsic_xy: float, hsic_xx: float, hsic_yy: float) -> float:
    """CKA from the HSIC sums; 0 when either representation is constant (no variance to compare)."""
    denominator = (max(hsic_xx, 0.0) * max(hsic_yy, 0.0)) ** 0.5
    return hsic_xy / denominator if denominator > 0 else 0.0


def unbiased_hsic(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """The unbiased HSIC estimator of two [n, n] Gram matrices (Song et al. 2012, eq. 5), n >= 4."""
    n = k.shape[0]
    k, l = k.clone(), l.clone()
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    ones = torch.ones(n, dtype=k.dtype, device=k.device)
    trace = (k * l).sum()  # tr(K L) for symmetric L
    sums = (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2))
    cross = 2 * (ones @ k @ (l @ ones)) / (n - 2)
    return (trace + sums - cross) / (n * (n - 3))


def _gram(hidden: torch.Tensor) -> torch.Tensor:
    """X X^T of the examples' flattened hidden states: the product in float32 (a score needs no more, and a
    float64 product of [B, C*H*W] states is several times slower), the HSIC sums after it in float64."""
    x = hidden.detach().flatten(1).float()
    return (x @ x.T).double()


def _cka_scores(model: nn.Module, modules: Mapping[int, nn.Module], infos: Mapping[int, BlockInfo],
                inputs: Sequence[Any]) -> Dict[int, float]:
    """Linear CKA between each block's input and output, summed over the batches of `inputs`."""
    order = sorted(modules)
    sums = torch.zeros(len(order), 3, dtype=torch.float64)  # per block: HSIC(in, out), HSIC(in, in), HSIC(out, out)

    def hook(row: int, info: BlockInfo):
        def record(module: nn.Module, args: tuple, output: Any) -> None:
            x, y = _gram(args[0]), _gram(info.call.hidden(output))
            if x.shape[0] < MIN_BATCH:
                raise ConfigError(f"repl.similarity=cka needs batches of {MIN_BATCH} examples or more, got {x.shape[0]}")
            sums[row] += torch.stack([unbiased_hsic(x, y), unbiased_hsic(x, x), unbiased_hsic(y, y)]).cpu()
        return record

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    modes = {m: m.training for m in model.modules()}
    with ExitStack() as stack, torch.no_grad():
        for row, i in enumerate(order):
            stack.callback(modules[i].register_forward_hook(hook(row, infos[i])).remove)
        stack.callback(_restore_modes, modes)
        model.eval()
        for x in inputs:
            if isinstance(x, Mapping):
                model(**{k: _to(v, device) for k, v in x.items()})
            else:
                model(_to(x, device))
    _sum_over_processes(sums)
    return {i: linear_cka(*sums[row].tolist()) for row, i in enumerate(order)}


def _restore_modes(modes: Mapping[nn.Module, bool]) -> None:
    """Each module's own training flag back (train() would cascade one module's mode to its children)."""
    for module, mode in modes.items():
        module.training = mode


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _sum_over_processes(sums: torch.Tensor) -> None:
    """Add the HSIC sums of every process (in place), so that all ranks score alike; no-op in one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = sums.to(device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    sums.copy_(total.cpu())
