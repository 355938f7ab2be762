"""repl.recompute: surrogates keep no synthesized weight for backward (true, or auto where it pays), and gradients
do not change."""
import weakref

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from repl import apply_replacement
from repl.engine.measure.memory import SavedTensorMeter
from repl.errors import ConfigError
from repl.method import recompute
from repl.method.surrogates import Surrogate
from tests.method.models import BUILDERS as RESNETS
from tests.method.test_transformers import BUILDERS as TRANSFORMERS, VOCAB, CONTEXT

# (model, switches): every surrogate kind, each fusion granularity, and both adapters (boundary blocks).
CASES = {
    "vit lite": ("vit", {}),
    "vit full tensor": ("vit", {"surrogate": "full", "fusion": "tensor"}),
    "vit layerscale channel": ("vit_layerscale", {"fusion": "channel"}),
    "gpt lite": ("gpt", {}),
    "resnet20 lite channel": ("resnet20", {"fusion": "channel"}),
    "resnet20 no adapter": ("resnet20", {"select": "explicit", "blocks": [1]}),  # neighbours 0 and 2: same shapes
    "resnet20 full": ("resnet20", {"surrogate": "full"}),
    "resnet20 boundary tile": ("resnet20", {"boundary": "allow", "select": "explicit", "blocks": [3, 6]}),
    "resnet20 boundary learned": ("resnet20", {"boundary": "allow", "select": "explicit", "blocks": [3, 6],
                                               "adapt": "learned", "fusion": "tensor"}),
    "timm_resnet50 lite": ("timm_resnet50", {}),
}


def built(case: str, recompute, batch: int = 2):
    name, switches = CASES[case]
    torch.manual_seed(0)
    model = (TRANSFORMERS.get(name) or RESNETS[name])()
    apply_replacement(model, ratio=0.34, recompute=recompute, **switches)
    torch.manual_seed(1)
    if name == "gpt":
        x = torch.randint(0, VOCAB, (batch, CONTEXT))
    else:
        side = 64 if name == "timm_resnet50" else 32
        x = torch.randn(batch, 3, side, side)
    return model, x


def gradients(model, x, precision: str = "32", wrap=None) -> dict:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        out = model(x) if wrap is None else wrap(model, x)
    out.float().logsumexp(-1).mean().backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("setting", [True, "auto"])
@pytest.mark.parametrize("precision", ["32", "bf16"])
@pytest.mark.parametrize("case", CASES)
def test_gradients_are_bitwise_those_of_kept_weights(case, precision, setting):
    kept, dropped = gradients(*built(case, False), precision), gradients(*built(case, setting), precision)
    assert kept.keys() == dropped.keys() and any(".fusion." in n for n in kept)
    for name in kept:  # the rebuild runs the same ops on the same parameters: equal bits, no tolerance
        assert torch.equal(kept[name], dropped[name]), name


def _synthesized_refs(model, x, precision: str = "32"):
    """Weak references to every tensor the surrogates' layers received in one forward, and that forward's output."""
    refs = []
    real = recompute.cast_for_consumer

    def spy(module, leaf, w):
        used = real(module, leaf, w)
        refs.append(weakref.ref(used))
        return used

    with pytest.MonkeyPatch.context() as patch, torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        patch.setattr(recompute, "cast_for_consumer", spy)
        out = model(x)
    return refs, out


@pytest.mark.parametrize("precision", ["32", "bf16"])
@pytest.mark.parametrize("case", ["vit lite", "gpt lite", "resnet20 full", "resnet20 boundary tile",
                                  "resnet20 boundary learned"])
def test_no_synthesized_weight_keeps_memory_past_the_forward(case, precision):
    """The graph may hold a weight's tensor object (its saved layers do), but none of its memory until backward."""
    kept, dropped = gradients(*built(case, False), precision), {}
    model, x = built(case, True)
    refs, out = _synthesized_refs(model, x, precision)
    alive = [r() for r in refs if r() is not None]
    assert refs and out.requires_grad
    assert alive and all(w.untyped_storage().nbytes() == 0 for w in alive)  # saved by the layers, memory freed
    if precision == "bf16" and case != "resnet20 boundary learned":  # linears and convs saved autocast's copy: ours
        assert any(w.dtype == torch.bfloat16 for w in alive)
    out.float().logsumexp(-1).mean().backward()  # rebuilt when backward reaches the surrogate
    dropped = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert kept.keys() == dropped.keys() and all(torch.equal(kept[n], dropped[n]) for n in kept)


def test_only_synthesis_graphs_that_save_gathered_copies_are_recomputed_in_backward():
    """Tile adapters with scalar coefficients multiply before the repeat: their graph saves no copy, so the
    surrogate runs its synthesis once; learned gains save the gathered copy, and that synthesis is checkpointed."""
    def flags(case):
        model, _ = built(case, True)
        return [s.fusion.keeps_copies for s in model.modules() if isinstance(s, Surrogate) and s.fusion.adapters]

    assert flags("resnet20 boundary tile") and not any(flags("resnet20 boundary tile"))
    assert flags("resnet20 boundary learned") and all(flags("resnet20 boundary learned"))


def test_a_second_backward_through_a_retained_graph_reads_the_rebuilt_weights():
    model, x = built("vit lite", True)
    out = model(x).logsumexp(-1).mean()
    first = torch.autograd.grad(out, list(model.parameters()), retain_graph=True)
    second = torch.autograd.grad(out, list(model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_weights_are_kept_with_recompute_off():
    model, x = built("resnet20 full", False)
    refs = []
    for s in (m for m in model.modules() if isinstance(m, Surrogate)):
        s.synthesized = lambda s=s: {n: w for n, w in type(s).synthesized(s).items() if not refs.append(weakref.ref(w))}
    out = model(x)  # its graph holds what the layers saved
    assert out.requires_grad and any(r() is not None and r().untyped_storage().nbytes() > 0 for r in refs)  # the layers keep them whole


@pytest.mark.parametrize("precision", ["32", "bf16"])
@pytest.mark.parametrize("case", ["vit lite", "resnet20 no adapter"])
def test_other_saved_tensors_still_reach_the_hooks_outside(case, precision):
    """The memory meter (an outer saved-tensor hook) still sees every activation; only the weights leave it.

    (Surrogates without channel adapters: with adapters, their gathered copies leave the meter too.)
    """
    measured = {}
    for recompute in (False, True):
        model, x = built(case, recompute)
        weights = sum(w.numel() * w.element_size() for s in model.modules() if isinstance(s, Surrogate)
                      for w in s.synthesized().values())
        with SavedTensorMeter(model) as meter, torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            model(x)
        measured[recompute] = meter.bytes
    assert 0 < measured[False] - measured[True] <= weights


@pytest.mark.parametrize("precision", ["32", "bf16"])
@pytest.mark.parametrize("case", ["vit lite", "resnet20 boundary tile"])
def test_under_activation_checkpointing_of_the_whole_model(case, precision):
    """Checkpointing recomputes the forward inside backward: the weights it collects then are kept, not freed."""
    wrap = lambda model, x: checkpoint(model, x, use_reentrant=False)  # noqa: E731
    kept = gradients(*built(case, False), precision, wrap=wrap)
    dropped = gradients(*built(case, True), precision, wrap=wrap)
    assert kept.keys() == dropped.keys() and all(torch.equal(kept[n], dropped[n]) for n in kept)


def test_nothing_is_released_where_nothing_is_saved_for_backward(monkeypatch):
    """Under no_grad (evaluation) the surrogate runs plainly; with grad on, each surrogate releases its weights once."""
    released = []
    real = recompute.release
    monkeypatch.setattr(recompute, "release", lambda *a: released.append(1) or real(*a))
    model, x = built("resnet20 lite channel", True)
    with torch.no_grad():
        model.eval()(x)
    assert released == []
    model.train()(x)
    assert len(released) == sum(isinstance(m, Surrogate) for m in model.modules()) > 0


def test_compiled_surrogates_trace_in_one_graph_and_match_eager():
    """Under torch.compile the surrogate is traced plainly (no storage tricks in the graph): no graph break."""
    eager = gradients(*built("resnet20 boundary tile", True))
    model, x = built("resnet20 boundary tile", True)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    traced = gradients(model, x, wrap=lambda m, inp: compiled(inp))
    assert traced.keys() == eager.keys()
    for name in eager:  # the same ops, traced: equal up to float rounding of a reordered graph
        torch.testing.assert_close(traced[name], eager[name], rtol=1e-5, atol=1e-6)


def test_recompute_is_for_surrogates_only():
    with pytest.raises(ConfigError, match="repl.recompute=false applies to repl.method=repl"):
        apply_replacement(RESNETS["resnet20"](), ratio=0.25, method="drop", recompute=False)


def test_a_run_switched_to_recompute_on_resume_trains_the_same_weights(tmp_path):
    """Recompute changes memory, not the math: 2 steps without it + resume with it + 1 step = 3 steps without it."""
    from tests.engine.test_training import assert_same_weights, run, weights

    run(tmp_path / "split", "trainer.max_steps=2", "repl.recompute=false")
    resumed = run(tmp_path / "split", "trainer.max_steps=3", "repl.recompute=true")
    run(tmp_path / "whole", "trainer.max_steps=3", "repl.recompute=false")
    saved = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)["config"]
    assert resumed["steps_done"] == 3 and saved["repl"]["recompute"] is True
    assert_same_weights(weights(tmp_path / "split"), weights(tmp_path / "whole"))


def _released(model, x) -> dict:
    """Surrogate path -> whether its training forward freed the weights it synthesized (recompute.release ran)."""
    calling, freed = [], {}
    real = recompute.release
    surrogates = {s: p for p, s in model.named_modules() if isinstance(s, Surrogate)}
    handles = [s.register_forward_pre_hook(lambda m, a: calling.append(m)) for s in surrogates]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recompute, "release", lambda *a: freed.setdefault(surrogates[calling[-1]], real(*a)))
        model(x).logsumexp(-1).mean().backward()
    for h in handles:
        h.remove()
    return {p: freed.get(p, False) for p in surrogates.values()}


def test_auto_frees_lite_weights_where_they_outweigh_a_quarter_of_the_input():
    """ResNet-20 lite: each surrogate's 3x3 conv (+ BatchNorm) against its input [B, C, H, W]. At batch 2 the
    deepest stage's weights (64x64x9) outweigh a quarter of its 2x64x8x8 input and are freed, the first stage's
    (16x16x9) are kept; at batch 64 every input outweighs its weights and nothing is freed."""
    model, x = built("resnet20 lite channel", "auto")
    surrogates = {p: s for p, s in model.named_modules() if isinstance(s, Surrogate)}
    assert {s.release for s in surrogates.values()} == {recompute.Release.BY_SIZE}
    small = _released(model, x)
    expected = {}
    for path, s in surrogates.items():
        channels = s.body.conv1.in_channels
        side = 32 // (s.body.conv1.in_channels // 16)  # stages of 16, 32, 64 channels on 32, 16, 8 pixels
        expected[path] = s.fusion.elements >= recompute.INPUT_SHARE * 2 * channels * side * side
    assert small == expected and any(small.values()) and not all(small.values())
    model, x = built("resnet20 lite channel", "auto", batch=64)
    assert not any(_released(model, x).values())


def test_auto_always_frees_full_surrogates_and_the_vit_lite_weights():
    """`full` saves what the block saved under backprop, so every kept weight would be over it: auto frees them at
    any batch. ViT lite's MLP weights outweigh a quarter of a batch-2 token input."""
    for case, batch in (("resnet20 full", 64), ("vit lite", 2)):
        model, x = built(case, "auto", batch=batch)
        released = _released(model, x)
        assert released and all(released.values()), case


def test_auto_saves_between_always_and_never_freeing():
    """Saved-for-backward bytes at batch 2, where auto frees the deeper stages' weights and keeps the first's:
    true < auto < false."""
    measured = {}
    for setting in (False, "auto", True):
        model, x = built("resnet20 lite channel", setting, batch=2)
        with SavedTensorMeter(model) as meter:
            model(x)
        measured[setting] = meter.bytes
    assert measured[True] < measured["auto"] < measured[False]


@pytest.mark.parametrize("value", ["sometimes", 1, None])
def test_recompute_accepts_true_false_or_auto(value):
    with pytest.raises(ConfigError, match="repl.recompute=.* is not supported; choose one of true, false, auto"):
        apply_replacement(RESNETS["resnet20"](), ratio=0.25, recompute=value)


# Per-sample gradients through torch.func: grad's tensors are wrappers with no storage of their own, and grad refuses
# the saved-tensor hooks checkpointing uses; the surrogate then keeps its weights for that call (boundary learned:
# a synthesis that saves gathered copies, so the checkpoint path is taken outside torch.func).
FUNC_CASES = {
    "lite": {},
    "full": {"surrogate": "full"},
    "lite boundary learned channel": {"boundary": "allow", "select": "explicit", "blocks": [2, 4], "adapt": "learned",
                                      "fusion": "channel"},
}


@pytest.mark.parametrize("setting", [True, "auto"])
@pytest.mark.parametrize("case", FUNC_CASES)
def test_per_sample_gradients_through_torch_func_are_those_of_one_backward_per_sample(case, setting):
    from repl.models import CifarResNet

    torch.manual_seed(0)
    model = CifarResNet(14, widths=(4, 8, 16))
    apply_replacement(model, ratio=0.34, recompute=setting, **FUNC_CASES[case])
    model.eval()
    assert any(isinstance(m, Surrogate) for m in model.modules())
    if case.startswith("lite boundary"):
        assert any(m.fusion.keeps_copies for m in model.modules() if isinstance(m, Surrogate))
    x = torch.randn(3, 3, 8, 8)
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, b, sample):
        return torch.func.functional_call(model, (p, b), (sample.unsqueeze(0),)).logsumexp(-1).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, None, 0))(params, buffers, x)
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        model(x[i:i + 1]).logsumexp(-1).sum().backward()
        for name, p in model.named_parameters():
            # The same float32 sums; vmap runs the batched kernels (a conv over 3 samples, not 1), whose reduction
            # order may differ: rounding of ~1e-7 relative per op over this 14-layer net stays orders below 1e-4.
            torch.testing.assert_close(per_sample[name][i], p.grad, rtol=1e-4, atol=1e-6, msg=name)
