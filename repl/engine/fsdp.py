"""FSDP (PyTorch's `fully_shard`) for RepL models: trainer.strategy=fsdp.

Grouping rule. FSDP keeps a parameter sharded except while its unit runs: a unit's parameters are
all-gathered in the pre-forward hook of the first of its modules to run, freed (`reshard_after_forward`)
once every module of the unit has run, gathered again for backward, and their gradients are
reduce-scattered when backward has passed through the whole unit. A `Surrogate` reads its two
neighbour blocks' full weights inside its own forward, and its backward adds to their gradients. So
every surrogate and both its neighbours form one unit: `fully_shard([prev, surrogate, next])`.
Then, in forward, the neighbours are unsharded from `prev`'s forward until `next`'s has ended,
which covers the surrogate's; in backward, the unit is gathered before `next`'s backward and its
gradients are reduced only after `prev`'s, so the surrogate's contribution to the neighbours'
gradients (repl.neighbor_grad) is in what is reduced. Surrogates that share a neighbour (blocks
1 and 3 replaced share block 2) chain into one unit ([0, 1, 2, 3, 4]); at the largest ratio that
is the whole block sequence, which still shards every parameter, gradient and optimizer state at
rest but gathers the block weights together. The other blocks are one unit each; the root model
(stem, head, and whatever is outside the blocks) is the last `fully_shard`. A surrogate's fusion
coefficients and adapters live in it, so they are sharded, gathered and reduced with its unit.

With each block its own unit, the surrogate would read `next` still sharded (a DTensor, which torch
refuses to mix with the plain activations). Unsharding the neighbours from a surrogate pre-hook
instead would not be enough: `next`'s gradient would be reduce-scattered after `next`'s own
backward, before the surrogate's backward (which runs later) adds to it.

FSDP refuses 0-dim parameters; scalar fusion coefficients (repl.fusion=scalar) become 1-element
vectors, which broadcast the same way. `ShardedModel.full_state` / `load_full_state` convert
them back, so a checkpoint holds the same keys, shapes and optimizer layout as a DDP or
single-process one, and either can resume the other.
"""
from __future__ import annotations

# torch.distributed.fsdp and .checkpoint are imported where they are used: about 0.7 s that a process stopping before
# it trains (a config error) need not pay; a training run imports them anyway (torch.optim imports torch._dynamo).

from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn

from repl.families import get_module
from repl.method.fusion import Fusion
from repl.method.plan import Plan
from repl.method.surrogates import Surrogate

SCALAR_STATE = ("step",)  # optimizer state entries that are one number per parameter whatever its shape


def fsdp_units(num_blocks: int, surrogates: Sequence[int]) -> List[List[int]]:
    """Block indices grouped into FSDP units, in order: each surrogate i with i-1 and i+1, units that
    share a block merged; every other block alone."""
    spans: List[List[int]] = []
    for i in sorted(surrogates):
        if not 0 < i < num_blocks - 1:
            raise ValueError(f"surrogate {i} needs two neighbours among {num_blocks} blocks")
        if spans and spans[-1][-1] >= i - 1:
            spans[-1][-1] = i + 1
        else:
            spans.append([i - 1, i + 1])
    units: List[List[int]] = []
    covered = 0
    for lo, hi in spans:
        units += [[j] for j in range(covered, lo)]
        units.append(list(range(lo, hi + 1)))
        covered = hi + 1
    return units + [[j] for j in range(covered, num_blocks)]


def surrogate_indices(model: nn.Module, plan: Plan, block_paths: Sequence[str]) -> List[int]:
    """The planned blocks that are `Surrogate`s in `model` (a baseline's planned blocks read no neighbour)."""
    return [i for i in plan.blocks if isinstance(get_module(model, block_paths[i]), Surrogate)]


def _lift_scalar_parameters(model: nn.Module) -> FrozenSet[str]:
    """Make each 0-dim fusion coefficient a 1-element vector (FSDP shards dim 0); returns their names."""
    lifted = set()
    for fusion in (m for m in model.modules() if isinstance(m, Fusion)):
        for coefficients in (fusion.a, fusion.b):
            for key, param in list(coefficients.items()):
                if param.ndim == 0:
                    coefficients[key] = nn.Parameter(param.detach().reshape(1), requires_grad=param.requires_grad)
                    lifted.add(id(coefficients[key]))
    return frozenset(name for name, p in model.named_parameters() if id(p) in lifted)


@dataclass
class ShardedModel:
    """A model sharded in place by `shard_model`: its units (block paths) and the names of its lifted scalars."""

    module: nn.Module
    units: List[List[str]]
    lifted: FrozenSet[str]

    def full_state(self, optimizer: torch.optim.Optimizer) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """(model state_dict, optimizer state_dict) of the whole model on rank 0's CPU, in the layout of an
        unsharded model's (`optimizer.state_dict()`: parameters numbered in param-group order); empty dicts
        on the other ranks. A collective: every rank calls it."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(self.module, options=options)
        optim_state = get_optimizer_state_dict(self.module, optimizer, options=options)
        if dist.get_rank() != 0:
            return {}, {}
        for name in self.lifted:
            model_state[name] = model_state[name].reshape(())
        order = [fqn for group in optim_state["param_groups"] for fqn in group["params"]]
        number = {fqn: i for i, fqn in enumerate(order)}
        state = {number[fqn]: {k: self._unlifted(fqn, k, v) for k, v in entries.items()}
                 for fqn, entries in optim_state["state"].items()}
        groups = [{**group, "params": [number[fqn] for fqn in group["params"]]} for group in optim_state["param_groups"]]
        return model_state, {"state": state, "param_groups": groups}

    def load_full_state(self, optimizer: torch.optim.Optimizer, model_state: Dict[str, Any],
                        optim_state: Optional[Dict[str, Any]]) -> None:
        """Load what `full_state` (or an unsharded model's state_dict) returned, given in full on every rank."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

        model_state = {k: (v.reshape(1) if k in self.lifted else v) for k, v in model_state.items()}
        options = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.module, model_state, options=options)
        if optim_state is None:
            return
        names = {id(p): name for name, p in self.module.named_parameters()}
        order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
        saved = [i for group in optim_state["param_groups"] for i in group["params"]]
        if len(saved) != len(order):
            raise ValueError(f"the saved optimizer state has {len(saved)} parameters, this optimizer {len(order)}")
        fqn = dict(zip(saved, order))
        state = {fqn[i]: {k: (v.reshape(1) if fqn[i] in self.lifted and k not in SCALAR_STATE else v)
                          for k, v in entries.items()}
                 for i, entries in optim_state["state"].items()}
        groups = [{**group, "params": [fqn[i] for i in group["params"]]} for group in optim_state["param_groups"]]
        set_optimizer_state_dict(self.module, optimizer, {"state": state, "param_groups": groups}, options=options)
        for live, saved_group in zip(optimizer.param_groups, optim_state["param_groups"]):  # its loader makes tuples lists
            live.update({k: tuple(v) for k, v in saved_group.items() if isinstance(v, tuple) and k != "params"})

    def _unlifted(self, fqn: str, key: str, value: Any) -> Any:
        """An optimizer state entry of a lifted scalar back at the scalar's shape."""
        if fqn in self.lifted and key not in SCALAR_STATE and isinstance(value, torch.Tensor):
            return value.reshape(())
        return value


def shard_model(model: nn.Module, plan: Plan, block_paths: Sequence[str], device: torch.device) -> ShardedModel:
    """Shard `model` (already on `device`, method applied) in place over all ranks: each surrogate with its
    two neighbours as one unit (shared neighbours chain units), every other block alone, the root last.

    `block_paths` are the model's block paths from `repl.families.discover_blocks`, read before the method
    was applied (the planned ones now hold surrogates). Build the optimizer afterwards, over the sharded
    parameters. See the module docstring for why this grouping.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if plan.blocks and len(block_paths) != plan.num_blocks:
        raise ValueError(f"shard_model needs the model's {plan.num_blocks} block paths, got {len(block_paths)}")
    lifted = _lift_scalar_parameters(model)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    units = fsdp_units(len(block_paths), surrogate_indices(model, plan, block_paths))
    for unit in units:
        modules = [get_module(model, block_paths[j]) for j in unit]
        fully_shard(modules if len(modules) > 1 else modules[0], mesh=mesh)
    fully_shard(model, mesh=mesh)
    return ShardedModel(module=model, units=[[block_paths[j] for j in unit] for unit in units], lifted=lifted)
