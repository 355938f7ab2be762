"""conv_paths.py at a tiny size: every convolution of the model is measured once, on both paths (never a time)."""
import json

import pytest
import torch
from torch import nn

from repl.engine.measure.flops import flop_counter


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    import benchmarks.conv_paths as conv_paths

    out = tmp_path_factory.mktemp("conv_paths")
    return conv_paths.main(["--model", "resnet32", "--batch", "2", "--rounds", "1", "--out-dir", str(out)]), out


def test_every_convolution_call_of_the_model_is_measured_with_its_path(result):
    res, out = result
    import benchmarks.cost as cost

    torch.manual_seed(0)
    net = cost.SPECS["resnet32"].build()
    assert sum(c["calls"] for c in res["convolutions"]) == sum(isinstance(m, nn.Conv2d) for m in net.modules())
    assert all(c["torch_path"] in ("thnn", "onednn") for c in res["convolutions"])
    assert all(c["seconds"]["torch"] > 0 and c["seconds"]["onednn"] > 0 for c in res["convolutions"])
    # both paths compute the same convolution, to float32 summation order
    assert max(c["max_rel_diff"] for c in res["convolutions"]) < 1e-5
    assert json.loads((out / "conv_paths_cpu.json").read_text()) == json.loads(json.dumps(res))
    assert "| conv 3x3 |" in (out / "conv_paths_cpu.md").read_text()


def test_flops_match_the_projects_flop_counter(result):
    """A shape's FLOPs are what the project's counter counts for that convolution's forward."""
    from benchmarks.conv_paths import flops

    for conv in result[0]["convolutions"]:
        cin, cout, kernel, stride, padding, dilation, groups, h, w = conv["shape"]
        x, weight = torch.zeros(2, cin, h, w), torch.zeros(cout, cin // groups, *kernel)
        with flop_counter() as counter:
            torch.nn.functional.conv2d(x, weight, None, stride, padding, dilation, groups)
        assert flops(conv["shape"], 2) == counter.get_total_flops()


def test_token_models_are_refused_in_one_line(capsys):
    import benchmarks.conv_paths as conv_paths

    with pytest.raises(SystemExit):
        conv_paths.main(["--model", "lm"])
    assert "reads tokens and has no convolutions" in capsys.readouterr().err
