"""repl.recompute: surrogates keep no synthesized weight for backward, and gradients do not change."""
import copy
import weakref

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from repl import apply_replacement
from repl.engine.measure.memory import SavedTensorMeter
from repl.errors import ConfigError
from repl.method import surrogates
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


def built(case: str, recompute: bool):
    name, switches = CASES[case]
    torch.manual_seed(0)
    model = (TRANSFORMERS.get(name) or RESNETS[name])()
    apply_replacement(model, ratio=0.34, recompute=recompute, **switches)
    torch.manual_seed(1)
    if name == "gpt":
        x = torch.randint(0, VOCAB, (2, CONTEXT))
    else:
        x = torch.randn(2, 3, 64 if name == "timm_resnet50" else 32, 64 if name == "timm_resnet50" else 32)
    return model, x


def gradients(model, x, precision: str = "32", wrap=None) -> dict:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        out = model(x) if wrap is None else wrap(model, x)
    out.float().logsumexp(-1).mean().backward()
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("precision", ["32", "bf16"])
@pytest.mark.parametrize("case", CASES)
def test_gradients_are_bitwise_those_of_kept_weights(case, precision):
    kept, dropped = gradients(*built(case, False), precision), gradients(*built(case, True), precision)
    assert kept.keys() == dropped.keys() and any(".fusion." in n for n in kept)
    for name in kept:  # the rebuild runs the same ops on the same parameters: equal bits, no tolerance
        assert torch.equal(kept[name], dropped[name]), name


def _synthesized_refs(model, x):
    """Weak references to every tensor the surrogates synthesized in one forward, and that forward's output."""
    refs = []
    for s in (m for m in model.modules() if isinstance(m, Surrogate)):
        s.synthesized = lambda s=s: {n: w for n, w in type(s).synthesized(s).items() if not refs.append(weakref.ref(w))}
    out = model(x)
    return refs, out


@pytest.mark.parametrize("case", ["vit lite", "gpt lite", "resnet20 full", "resnet20 boundary learned"])
def test_no_synthesized_weight_outlives_the_forward(case):
    for recompute in (False, True):
        refs, out = _synthesized_refs(*built(case, recompute))
        alive = sum(r() is not None for r in refs)
        assert refs and out.requires_grad
        if recompute:
            assert alive == 0  # nothing holds them until backward: autograd kept markers
        else:
            assert alive > 0  # the layers saved their weights for backward
        out.float().sum().backward()  # backward still works after the drop


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


def test_under_activation_checkpointing_of_the_whole_model():
    wrap = lambda model, x: checkpoint(model, x, use_reentrant=False)  # noqa: E731
    kept, dropped = gradients(*built("vit lite", False), wrap=wrap), gradients(*built("vit lite", True), wrap=wrap)
    assert all(torch.equal(kept[n], dropped[n]) for n in kept)


def test_no_hooks_where_nothing_is_saved_for_backward(monkeypatch):
    """Under no_grad (evaluation) the surrogate runs plainly: the hooks are only entered when grad is on."""
    entered = []
    real = surrogates.recomputed
    monkeypatch.setattr(surrogates, "recomputed", lambda *a: entered.append(1) or real(*a))
    model, x = built("resnet20 lite channel", True)
    with torch.no_grad():
        model.eval()(x)
    assert entered == []
    model.train()(x)
    assert len(entered) == sum(isinstance(m, Surrogate) for m in model.modules()) > 0


def test_recompute_is_for_surrogates_only():
    with pytest.raises(ConfigError, match="repl.recompute=true applies to repl.method=repl"):
        apply_replacement(RESNETS["resnet20"](), ratio=0.25, method="drop", recompute=True)


def test_a_run_switched_to_recompute_on_resume_trains_the_same_weights(tmp_path):
    """Recompute changes memory, not the math: 2 steps + resume with it on + 1 step = 3 steps without it."""
    from tests.engine.test_training import assert_same_weights, run, weights

    run(tmp_path / "split", "trainer.max_steps=2")
    resumed = run(tmp_path / "split", "trainer.max_steps=3", "repl.recompute=true")
    run(tmp_path / "whole", "trainer.max_steps=3")
    saved = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)["config"]
    assert resumed["steps_done"] == 3 and saved["repl"]["recompute"] is True
    assert_same_weights(weights(tmp_path / "split"), weights(tmp_path / "whole"))


def test_a_torch_without_the_hook_stack_is_refused_before_any_surgery(monkeypatch):
    import repl.method.recompute as recompute

    monkeypatch.setattr(recompute, "_TOP_HOOKS", None)
    model = RESNETS["resnet20"]()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match=r"repl.recompute=true needs torch>=2.8"):
        apply_replacement(model, ratio=0.25, recompute=True)
    assert not any(isinstance(m, Surrogate) for m in model.modules()) and model.state_dict().keys() == before.keys()
