"""Features by module path: what is captured, when, and the errors for bad paths and in-place changes."""
import pytest
import torch
from torch import nn

import kdforge.models as models
from kdforge.data.types import Batch, DataSpec
from kdforge.errors import ConfigError
from kdforge.models import ModelSpec
from kdforge.models.taps import Taps

SPEC = DataSpec("cifar-like", (3, 32, 32), 10)


def _batch(n=4):
    return Batch(x=torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)), y=None,
                 index=torch.arange(n))


@pytest.fixture
def resnet():
    torch.manual_seed(0)
    return models.build(ModelSpec(name="resnet8x4"), SPEC)


def test_outputs_and_inputs_by_path_match_a_manual_forward(resnet):
    taps = Taps(resnet, ["layer2", "layer3.0.conv1", "fc:input"])
    x = _batch().x
    with taps.capture() as feats:
        logits = resnet(x)
    h = resnet.bn1(resnet.conv1(x)).relu()
    h2 = resnet.layer2(resnet.layer1(h))
    assert torch.allclose(feats["layer2"], h2, atol=1e-6)
    assert torch.allclose(feats["layer3.0.conv1"], resnet.layer3[0].conv1(h2), atol=1e-6)
    assert torch.allclose(resnet.fc(feats["fc:input"]), logits, atol=1e-6)
    assert feats["layer2"].requires_grad  # features keep their graph for feature losses


def test_nothing_is_kept_outside_capture(resnet):
    taps = Taps(resnet, ["layer1"])
    resnet(_batch().x)  # an evaluation forward: the hook stores nothing
    assert taps._store is None
    # a capture whose block runs no forward is an error that names the module that did not run
    with pytest.raises(ConfigError, match="layer1 .* did not run"):
        with taps.capture():
            pass


def test_unknown_path_lists_the_closest_names(resnet):
    with pytest.raises(ConfigError, match=r"no module 'layer4' in CifarResNet; closest: layer3, layer2, layer1"):
        Taps(resnet, ["layer4"])
    with pytest.raises(ConfigError, match=r"closest: .*layer3\.0\.conv1"):
        Taps(resnet, ["layer3.0.cnv1"])


def test_in_place_change_after_capture_is_detected():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True))
    taps = Taps(net, ["1"])  # the BatchNorm's output, which the in-place ReLU then overwrites
    with pytest.raises(ConfigError, match=r"'1' was changed in place.*'1:input'|tap the module"):
        with taps.capture():
            net(torch.randn(2, 3, 8, 8))
    ok = Taps(net, ["2"])
    with ok.capture() as feats:
        out = net(torch.randn(2, 3, 8, 8))
    assert feats["2"] is out


def test_shapes_use_eval_mode_and_leave_bn_statistics_alone(resnet):
    resnet.train()
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    shapes = Taps(resnet, ["layer1", "layer2", "layer3", "pool"]).shapes(_batch())
    assert shapes == {"layer1": (64, 32, 32), "layer2": (128, 16, 16), "layer3": (256, 8, 8), "pool": (256, 1, 1)}
    assert resnet.training
    assert all(torch.equal(before[k], v) for k, v in resnet.state_dict().items())


def test_remove_detaches_the_hooks(resnet):
    taps = Taps(resnet, ["layer1"])
    taps.remove()
    assert taps.paths == [] and not resnet.layer1._forward_hooks
