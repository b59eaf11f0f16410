"""ReviewKD method: ABF fusion against the official module, the review order, warm-up, and a short real run."""
import torch
import torch.nn.functional as F
from torch import nn

from kdforge.api import build_data
from kdforge.config.schema import DataConfig
from kdforge.losses import hcl_loss
from kdforge.methods import MethodSpec, Setup, build as build_method
from kdforge.methods.connectors import ABF
from kdforge.methods.reviewkd import _as_4d
from kdforge.models import ModelSpec, build as build_model
from kdforge.teachers import LiveTeacher


class ReferenceABF(nn.Module):
    """mdistiller e8c5bb3 mdistiller/distillers/ReviewKD.py L104-150 (`ABF`), line by line."""

    def __init__(self, in_channel, mid_channel, out_channel, fuse):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channel, mid_channel, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(mid_channel))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channel, out_channel, kernel_size=3, stride=1, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channel))
        self.att_conv = nn.Sequential(nn.Conv2d(mid_channel * 2, 2, kernel_size=1), nn.Sigmoid()) if fuse else None

    def forward(self, x, y=None, shape=None, out_shape=None):
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att_conv is not None:
            y = F.interpolate(y, (shape, shape), mode="nearest")
            z = torch.cat([x, y], dim=1)
            z = self.att_conv(z)
            x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
        if x.shape[-1] != out_shape:
            x = F.interpolate(x, (out_shape, out_shape), mode="nearest")
        y = self.conv2(x)
        return y, x


def test_abf_matches_the_official_module():
    torch.manual_seed(0)
    ours, ref = ABF(6, 4, 5, fuse=True), ReferenceABF(6, 4, 5, fuse=True)
    ref.load_state_dict(ours.state_dict())  # same names: the official checkpoints' keys load as they are
    x, residual = torch.randn(2, 6, 8, 8), torch.randn(2, 4, 4, 4)
    for a, b in zip(ours(x, residual, (16, 16)), ref(x, residual, 8, 16)):
        assert torch.allclose(a, b, atol=1e-6)


def _digits_method(**params):
    bundle = build_data(DataConfig(name="digits"))
    torch.manual_seed(0)
    teacher = build_model(ModelSpec(name="cnn", params={"channels": [16, 32], "hidden": 64}), bundle.spec).eval()
    student = build_model(ModelSpec(name="cnn", params={"channels": [4, 8], "hidden": 16}), bundle.spec)
    layers = ["features.3", "features.7", "head.0:input"]
    cfg = MethodSpec(name="reviewkd", params={"student_layers": layers, "teacher_layers": layers, **params})
    return bundle, build_method(cfg, student, LiveTeacher(teacher), Setup.for_data(bundle.spec, bundle.train))


class _Ctx:
    def __init__(self, epoch):
        self.epoch = epoch


def test_review_path_shapes_warmup_and_loss():
    bundle, method = _digits_method(warmup_epochs=4, reviewkd_weight=2.0)
    # Deepest first: the embedding (32 channels x 2x2 pooled = 128, as 1x1) does not fuse, the two conv stages do.
    assert [abf.att_conv is None for abf in method.abfs] == [True, False, False]
    batch = bundle.train.batch(torch.arange(16))
    logits, feats = method.student_with_features(batch, method.taps)
    teacher = method.teacher_outputs(batch)
    fused = method.review([_as_4d(feats[p]) for p in method.student_paths])
    assert [tuple(f.shape[1:]) for f in fused] == [(16, 4, 4), (32, 2, 2), (128, 1, 1)]
    expected = hcl_loss(fused, [_as_4d(teacher.features[p]) for p in method.teacher_paths])
    for epoch, ramp in ((0, 0.25), (2, 0.75), (9, 1.0)):
        _, terms = method.loss_terms(batch, _Ctx(epoch))
        assert torch.allclose(terms["reviewkd"], 2.0 * ramp * expected, rtol=1e-5)
    assert set(terms) == {"ce", "reviewkd"}


def test_training_lowers_the_review_loss_on_real_data():
    bundle, method = _digits_method(warmup_epochs=0)
    opt = torch.optim.Adam(method.trainable().parameters(), lr=3e-3)
    batch = bundle.train.batch(torch.arange(256))
    first = None
    for _ in range(60):
        _, terms = method.loss_terms(batch, _Ctx(0))
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
        first = first if first is not None else terms["reviewkd"].item()
    assert terms["reviewkd"].item() < 0.5 * first


def test_resnet_blocks_expose_their_preactivation_to_taps():
    """ReviewKD's teacher features are pre-activation stage outputs: `layerN.<last>.preact` is the block's sum
    before its ReLU (negative values kept), and its ReLU is the stage output."""
    from kdforge.models.taps import Taps
    from kdforge.data.types import DataSpec

    spec = DataSpec("cifar10", (3, 32, 32), 10)
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="resnet8x4"), spec).eval()
    taps = Taps(model, ["layer2.0.preact", "layer2"])
    with taps.capture() as feats:
        model(torch.randn(2, 3, 32, 32))
    assert (feats["layer2.0.preact"] < 0).any()
    assert torch.equal(feats["layer2.0.preact"].relu(), feats["layer2"])
