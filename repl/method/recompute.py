"""Synthesized weights that are not kept for backward (`repl.recompute`: true, false, or auto, the default).

A surrogate's body saves its weights for backward like any layer (a conv or linear needs W to
compute the input gradient). For an ordinary layer that W is the parameter, already in memory;
for a surrogate it is a fresh tensor made by the fusion, so keeping it costs one weight-sized
tensor per synthesized tensor per step, which dominates the activations at small batches.

How it is dropped, with no hook per saved tensor: autograd keeps whatever tensor objects the body's
layers saved, so the surrogate lets it, and after the body has run it frees the *memory* of each
synthesized weight the graph still holds (its storage is resized to 0 bytes; every saved view of
it shares that storage). One pre-hook on the grad_fn of the body's output, which runs before any
node of the body in backward, rebuilds those weights in place into the same storages: the same fusion ops
on the same (not yet stepped) parameters, so the bits are those that were dropped and gradients are
unchanged. Weights no saved tensor refers to (a linear's bias) are gone by then and are not rebuilt.
This is the scheme FSDP uses for its unsharded parameters.

What it costs and when it pays (`repl.recompute=auto`, `policy`): freeing and rebuilding is a few more ops per
synthesized tensor (resize, the fusion's mul/addcmul again), run where caches are cold, between a backward's
big kernels: ~0.5 ms per surrogate and step on a 2-core CPU (2-4% of ResNet-32's step at batch 32,
results/bench/cost_cpu_cifar.md). It pays where the weights are large next to the activations (ViT-B at batch 2 kept
2.06x backprop's activations with `lite`), and buys nothing where they are small (ResNet-32's 3x3 convs next
to a batch of 32x32 maps: 0.005x). `auto` therefore frees a `lite` surrogate's weights only when they hold at
least a quarter as many elements as its input (`INPUT_SHARE`), decided per call, so per batch size. Kept
below that, they add less than a quarter input per surrogate, while the sub-layer `lite` removed saved at
least half an input (a BasicBlock's second conv and its BatchNorm each save a full one; a bottleneck's 3x3
conv and its BatchNorm a quarter each; an attention sub-layer several): `lite` stays under backprop's
activations. A `full` surrogate saves what the block saved under backprop, so any weight it kept would be
over backprop's: `auto` always frees them.

Under autocast a linear or conv saves its low-precision copy of W, which autocast makes inside the
layer, out of reach. The surrogate therefore hands such a layer W already cast (`cast_for_consumer`:
the same cast, so the same bits), and that copy is what is freed. Layers autocast casts by other
names (Hugging Face's `Conv1D` calls addmm itself) keep their copy: correct, only not saved.

Not done (the weights are kept) while a backward pass is running: that is activation checkpointing
recomputing the forward, and the tensors it collects then are the ones backward reads. Under
`torch.compile` the surrogate is traced plainly and AOTAutograd's partitioner decides what to save
(it recomputes cheap elementwise ops such as the synthesis from the saved parameters). Under a `torch.func`
transform (per-sample gradients: `vmap(grad(...))` over `functional_call`) the weights are wrapper tensors without
storage of their own, and `grad` refuses the saved-tensor hooks of checkpointing: that call keeps its weights
(`storage_of`, `hooks_allowed`), with the gradients of ordinary backward (tested).
"""
from __future__ import annotations

import enum
import weakref
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from repl.errors import ConfigError

Rebuild = Callable[[str, torch.Tensor], Any]  # (name, into): writes weight `name` into `into`, same shape and dtype
# Layers whose weight autocast casts to its low-precision dtype inside the layer (torch's autocast op lists).
AUTOCAST_CASTS = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                  nn.ConvTranspose3d)
# The id of the backward pass running in this thread, -1 outside backward (a private torch function; a torch
# without it is treated as never inside backward, which only matters under activation checkpointing).
_GRAPH_TASK = getattr(torch._C, "_current_graph_task_id", lambda: -1)


AUTO = "auto"  # repl.recompute's per-case setting (the default)
INPUT_SHARE = 0.25  # auto: free a lite surrogate's weights when they hold >= this share of its input's elements


class Release(enum.Enum):
    """When a surrogate frees its synthesized weights after its forward (and rebuilds them in backward)."""

    ALWAYS = "always"  # repl.recompute=true, and `full` surrogates under auto
    NEVER = "never"  # repl.recompute=false: the graph keeps them, as any layer keeps its weight
    BY_SIZE = "by size"  # `lite` under auto: when the weights hold >= INPUT_SHARE of the input's elements


def check_setting(value: Any) -> None:
    """ConfigError unless `value` is a setting of repl.recompute: true, false or auto."""
    if not (isinstance(value, bool) or value == AUTO):
        raise ConfigError(f"repl.recompute={value!r} is not supported; choose one of true, false, {AUTO}")


def policy(setting: Union[bool, str], whole_block: bool) -> Release:
    """The release policy of a surrogate under `setting` (repl.recompute); `whole_block`: its body is the replaced
    block itself (`full`), which saves what backprop saved, so under auto it always frees its weights."""
    check_setting(setting)
    if setting == AUTO:
        return Release.ALWAYS if whole_block else Release.BY_SIZE
    return Release.ALWAYS if setting else Release.NEVER


def outweighs(weight_elements: int, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bool:
    """Whether weights of `weight_elements` elements are worth freeing next to a body called with `args`/`kwargs`:
    they hold at least INPUT_SHARE as many elements as its tensor inputs (any, when it has none)."""
    inputs = sum(t.numel() for t in (*args, *kwargs.values()) if isinstance(t, torch.Tensor))
    return weight_elements >= INPUT_SHARE * inputs


def in_backward() -> bool:
    """True while autograd runs a backward pass in this thread (e.g. activation checkpointing recomputing)."""
    return _GRAPH_TASK() != -1


def cast_for_consumer(module: nn.Module, leaf: str, w: torch.Tensor) -> torch.Tensor:
    """`w` as the layer `module` will use it as `leaf`: autocast's low-precision copy where autocast would cast it.

    The cast autocast makes (`tensor.to(dtype)` of a floating, non-float64 tensor), done here so that the copy
    is a tensor the surrogate can free after the forward; the layer then finds its dtype already right.
    """
    kind = w.device.type
    if not (isinstance(module, AUTOCAST_CASTS) and leaf in ("weight", "bias") and torch.is_autocast_enabled(kind)):
        return w
    if not w.is_floating_point() or w.dtype == torch.float64:
        return w
    return w.to(torch.get_autocast_dtype(kind))


def _tensors(output: Any) -> List[torch.Tensor]:
    """The tensors of a body's output (a tensor, or a tuple/list/dict holding some)."""
    if isinstance(output, torch.Tensor):
        return [output]
    items = output.values() if isinstance(output, dict) else output if isinstance(output, (tuple, list)) else ()
    return [t for t in items if isinstance(t, torch.Tensor)]


def _refill(w: torch.Tensor, nbytes: int, name: str, rebuild: Rebuild) -> None:
    """Give `w` its storage back (`nbytes`) and rebuild weight `name` into it, leaving `w`'s version counter
    alone (autograd checks that saved tensors were not modified in place; this restores, it does not modify).

    `w.data` is the alias for that: the same storage, sizes and strides, and a version counter of its own (the
    one thing `.data` does that `detach()` does not). A `new_empty(0).set_(...)` alias did the same with two
    dispatched ops, which cost ResNet-110 `lite` ~1 ms of a 170 ms CPU step (benchmarks/op_time.py --kept)."""
    w.untyped_storage().resize_(nbytes)
    rebuild(name, w.data)


def _unchanged(t: Any) -> Any:
    return t


def hooks_allowed() -> bool:
    """Whether saved-tensor hooks (what non-reentrant checkpointing runs on) may be installed here: not inside
    `torch.func.grad`/`vjp`/`jacrev`, which refuse them (`torch.autograd.graph.disable_saved_tensors_hooks`) and
    would fail the checkpoint. Torch has no public query for that setting, so this enters a pair of hooks that
    do nothing and leaves at once: entering is the one step that raises (RuntimeError) when they are refused."""
    try:
        with torch.autograd.graph.saved_tensors_hooks(_unchanged, _unchanged):
            return True
    except RuntimeError:
        return False


def storage_of(w: torch.Tensor) -> Optional[torch.UntypedStorage]:
    """`w`'s storage, or None where it has none of its own: the wrapper tensors of `torch.func` transforms
    (grad, vmap, jvp, ...), which hold the real tensor one level down and raise NotImplementedError on
    storage access. Torch has no public test for such a wrapper (`torch._C._functorch.is_functorch_wrapped_tensor`
    is private), and the storage access is exactly what releasing needs, so asking for it is the test."""
    try:
        return w.untyped_storage()
    except NotImplementedError:
        return None


def release(weights: Dict[str, torch.Tensor], output: Any, rebuild: Rebuild) -> bool:
    """Free the memory of `weights` (name -> tensor the body used) and rebuild them when backward reaches the body.

    Call after the body ran, with its `output`. `rebuild(name, into)` writes the weight `name` again into
    `into` (the saved tensor's memory, restored; cast to its dtype where it was cast). Returns False, freeing nothing,
    when no output carries a graph (then nothing would trigger the rebuild) or when a weight has no storage of its
    own (`storage_of`: under a `torch.func` transform; that call's weights are then kept, as with recompute=false).
    """
    nodes = {id(t.grad_fn): t.grad_fn for t in _tensors(output) if t.grad_fn is not None}
    if not nodes:
        return False
    storages = [storage_of(w) for w in weights.values()]
    if any(storage is None for storage in storages):
        return False  # a torch.func transform's tensors: its own autograd keeps them, nothing is freed
    # Only weak references: a weight no saved tensor holds is gone after the forward and is not rebuilt.
    held: List[Tuple[str, "weakref.ref[torch.Tensor]", int]] = []
    for (name, w), storage in zip(weights.items(), storages):
        held.append((name, weakref.ref(w), storage.nbytes()))
        storage.resize_(0)
    pending: Optional[Sequence[Tuple[str, "weakref.ref[torch.Tensor]", int]]] = held

    def rebuild_all(grad_outputs: Any) -> None:
        nonlocal pending
        if pending is None:
            return  # another output's node came first
        todo, pending = pending, None
        with torch.no_grad():
            for name, ref, nbytes in todo:
                w = ref()
                if w is not None:
                    _refill(w, nbytes, name, rebuild)

    for node in nodes.values():
        node.register_prehook(rebuild_all)
    return True
