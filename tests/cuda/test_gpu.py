"""What a GPU adds to the CPU suite: allocator peaks, autocast in bf16 and fp16, compile, channels-last, fused
optimizers and NCCL DDP, on RepL models with repl.recompute=true (and false, where the two are compared).

Marked `cuda`: skipped without a GPU, run by benchmarks/gpu.sh (its dry mode, REPL_DRY_GPU=1, runs the checks
that mean something on the CPU there, so they do not rot).
"""
from __future__ import annotations

import pytest
import torch

from repl import apply_replacement
from repl.method.surrogates import Surrogate
from tests.method.models import BUILDERS as RESNETS
from tests.method.test_transformers import BUILDERS as TRANSFORMERS

pytestmark = pytest.mark.cuda


def built(name: str, device: torch.device, recompute: bool = True, **switches):
    torch.manual_seed(0)
    model = (TRANSFORMERS.get(name) or RESNETS[name])()
    apply_replacement(model, ratio=0.34, recompute=recompute, **switches)
    torch.manual_seed(1)
    return model.to(device), torch.randn(4, 3, 32, 32, device=device)


def gradients(model, x, dtype=None) -> dict:
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = model(x)
    out.float().logsumexp(-1).mean().backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def assert_bitwise(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and any(".fusion." in n for n in a)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_rebuilt_weights_leave_the_allocator_after_the_forward(gpu):
    """CUDA allocator: what a forward leaves allocated for backward drops by the synthesized weights.
    (The step's peak is a benchmark output, benchmarks/cost.py's CUDA peak column, not asserted here.)"""
    held = {}
    for recompute in (False, True):
        model, x = built("vit", gpu, recompute)
        torch.cuda.synchronize(gpu)
        before = torch.cuda.memory_allocated(gpu)
        out = model(x).float().logsumexp(-1).mean()
        held[recompute] = torch.cuda.memory_allocated(gpu) - before
        weights = sum(w.numel() * w.element_size() for m in model.modules() if isinstance(m, Surrogate)
                      for w in m.synthesized().values())
        out.backward()
        del model, x, out
    assert 0 < held[False] - held[True] <= weights + 512 * 16  # the allocator rounds each block up to 512 bytes


@pytest.mark.parametrize("case", [("vit", {}), ("resnet20", {"fusion": "channel"}),
                                  ("resnet20", {"boundary": "allow", "select": "explicit", "blocks": [3, 6]})])
def test_bf16_autocast_gradients_are_bitwise_those_of_kept_weights(device, case):
    name, switches = case
    kept = gradients(*built(name, device, False, **switches), torch.bfloat16)
    assert_bitwise(kept, gradients(*built(name, device, True, **switches), torch.bfloat16))


@pytest.mark.parametrize("name", ["vit", "resnet20"])
def test_fp16_autocast_gradients_are_bitwise_those_of_kept_weights(gpu, name):
    kept = gradients(*built(name, gpu, False), torch.float16)
    assert_bitwise(kept, gradients(*built(name, gpu, True), torch.float16))


def test_channels_last_gradients_are_bitwise_those_of_kept_weights(device):
    grads = []
    for recompute in (False, True):
        model, x = built("resnet20", device, recompute, surrogate="full")
        grads.append(gradients(model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)))
    assert_bitwise(*grads)


def test_compiled_model_traces_in_one_graph_and_matches_eager(device):
    name = "resnet20" if device.type == "cuda" else "vit"  # the dry mode traces the smaller graph
    eager = gradients(*built(name, device))
    model, x = built(name, device)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="inductor" if device.type == "cuda" else "aot_eager")
    model.zero_grad(set_to_none=True)
    compiled(x).float().logsumexp(-1).mean().backward()
    for name, g in eager.items():  # inductor fuses and reorders float ops: equal up to rounding
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["AdamW", "SGD"])
def test_fused_optimizer_steps_a_repl_model_like_the_foreach_one(device, optimizer):
    """Fused kernels take every trainable tensor of a RepL model (0-dim coefficients included)."""
    weights = []
    for fused in (False, True):
        model, x = built("resnet20", device)
        kwargs = {"lr": 0.1, "momentum": 0.9} if optimizer == "SGD" else {"lr": 1e-2}
        opt = getattr(torch.optim, optimizer)(model.parameters(), fused=fused, foreach=None if fused else True, **kwargs)
        for _ in range(2):
            gradients(model, x)
            opt.step()
        weights.append({n: p.detach().clone() for n, p in model.named_parameters()})
    for name, w in weights[0].items():
        torch.testing.assert_close(weights[1][name], w, rtol=1e-5, atol=1e-6)


def test_ddp_over_the_gpus_trains_like_one_process(gpu, tmp_path):
    """NCCL DDP with 2 processes when there are 2 GPUs, else 1: RepL's references to neighbour weights go through
    DDP, and the result equals one process (ViT-T: no batch statistics; tests/test_ddp.py's argument)."""
    from tests import torchrun
    from tests.test_ddp import ARGS, WEIGHT_RTOL
    from tests.engine.test_training import weights

    nproc = min(2, torch.cuda.device_count())
    args = [a for a in ARGS if a != "trainer.device=cpu"] + ["trainer.device=cuda", "trainer.max_steps=3"]
    for name, procs in (("ddp", nproc), ("one", None)):
        done = torchrun.train(args, tmp_path / name, nproc=procs, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = weights(tmp_path / "ddp"), weights(tmp_path / "one")
    num = sum((a[k].float() - b[k].float()).norm() ** 2 for k in a if a[k].is_floating_point()) ** 0.5
    den = sum(b[k].float().norm() ** 2 for k in b if b[k].is_floating_point()) ** 0.5
    assert num / den < WEIGHT_RTOL
