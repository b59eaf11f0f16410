"""InfoDrop: self-information on hand-made images with known answers, the drop mask, and attachment by path."""
import math

import pytest
import torch
from torch import nn

from kdforge.api import build_data, build_model
from kdforge.config.schema import DataConfig, InfoDropConfig, ModelConfig
from kdforge.errors import ConfigError
from kdforge.models.infodrop import drop_mask, drop_probability, patch_likelihood, self_information

CROSS = [(0, 1), (1, 0), (0, -1), (-1, 0)]


def _dot_image() -> torch.Tensor:
    """A flat 12x12 image with one bright pixel at (6, 6)."""
    x = torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    x[0, 0, 6, 6] = 1.0
    return x


def test_self_information_of_a_single_dot_by_hand():
    # 1x1 conv: D_o(p) = (x(p) - x(p + o))^2. Squared differences of 1 occur 4 times at the dot (every offset)
    # and once at each of its 4 neighbours (the offset pointing at it): 8 of 4 * 144 pairs, so mean(D) = 1/72.
    # With h = 1: K = exp(-72 / 2) = exp(-36) where D = 1, else 1. Dot: p̂ = exp(-36), I = 36; neighbours:
    # p̂ = (3 + exp(-36)) / 4; every other pixel: p̂ = 1, I = 0 (flat texture carries no information).
    conv = nn.Conv2d(1, 4, kernel_size=1, bias=False)
    info = self_information(_dot_image(), conv, CROSS)[0, 0]
    assert info[6, 6].item() == pytest.approx(36.0, rel=1e-9)
    for r, c in ((5, 6), (7, 6), (6, 5), (6, 7)):
        assert info[r, c].item() == pytest.approx(-math.log((3 + math.exp(-36)) / 4), rel=1e-9)
    rest = torch.ones(12, 12, dtype=torch.bool)
    rest[6, 6] = rest[5, 6] = rest[7, 6] = rest[6, 5] = rest[6, 7] = False
    assert torch.all(info[rest] == 0)


def test_the_window_follows_the_conv_kernel_stride_and_padding():
    # A 3x3 conv with padding 1 sums D over each 3x3 window: the dot's 4 D = 1 entries now reach the 3x3 block
    # around it, and stride 2 keeps every other position (12x12 -> 6x6), exactly as the conv's output grid.
    x = _dot_image()
    conv = nn.Conv2d(1, 2, kernel_size=3, stride=2, padding=1, bias=False)
    like = patch_likelihood(x, conv, CROSS)
    assert like.shape == conv(x.float()).shape[:1] + (1,) + conv(x.float()).shape[2:]
    assert like[0, 0, 3, 3] < 1 and like[0, 0, 0, 0] == 1


def test_texture_is_dropped_and_the_dot_kept():
    x = _dot_image().repeat(4, 1, 1, 1)
    prob = drop_probability(patch_likelihood(x, nn.Conv2d(1, 1, 1), CROSS), temperature=0.03)
    assert torch.allclose(prob.sum((-2, -1)), torch.ones(4, 1, dtype=torch.float64))
    # Drop probability ∝ p̂^(1/T): 139 flat pixels at 1, the dot's 4 neighbours at ((3 + e^-36) / 4)^(1/T).
    flat = 1 / (139 + 4 * ((3 + math.exp(-36)) / 4) ** (1 / 0.03))
    assert prob[0, 0, 6, 6] < 1e-300 and prob[0, 0, 0, 0].item() == pytest.approx(flat, rel=1e-9)
    mask = drop_mask(prob, channels=3, drop_rate=1.5, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (4, 3, 12, 12) and torch.all(mask[:, :, 6, 6] == 1)
    dropped = (mask == 0).flatten(2).sum(-1)
    assert torch.all(dropped > 0) and torch.all(dropped <= int(1.5 * 144))


def test_min_pool_after_a_max_pool_and_no_underflow():
    like = torch.full((1, 1, 4, 4), 1e-30, dtype=torch.float64)
    like[0, 0, 0, 0] = 1e-20  # p̂^(1/0.03) underflows to 0 for all of them in float64; the softmax does not
    prob = drop_probability(like, 0.03, nn.MaxPool2d(2))
    assert prob.shape == (1, 1, 2, 2) and torch.isfinite(prob).all()
    assert torch.allclose(prob, torch.full_like(prob, 0.25))  # min over each window: all 1e-30


def test_attached_by_config_only_in_training_mode():
    spec = build_data(DataConfig(name="digits")).spec
    cfg = ModelConfig(name="cnn", params={"channels": [8, 16], "hidden": 16},
                      infodrop=InfoDropConfig(layers=[{"conv": "features.0", "output": "features.3"}]))
    torch.manual_seed(0)
    model = build_model(cfg, spec)
    plain = build_model(ModelConfig(name="cnn", params={"channels": [8, 16], "hidden": 16}), spec)
    plain.load_state_dict(model.state_dict())  # InfoDrop adds no parameters or buffers
    x = torch.rand(8, 1, 8, 8)
    model.eval(), plain.eval()
    assert torch.equal(model(x), plain(x))
    model.train(), plain.train()
    seen = {}
    model.features[3].register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    model(x)
    zeros = (seen["out"] == 0).float().mean()
    assert zeros > 0.3  # pooled 4x4 maps, 1.5 * 16 draws with replacement: about 1 - exp(-1.5) = 78 % dropped
    with pytest.raises(ConfigError, match=r"^student\.infodrop\.layers\.conv: 'features\.1' is a BatchNorm2d"):
        build_model(cfg.model_copy(update={"infodrop": InfoDropConfig(layers=[{"conv": "features.1"}])}), spec,
                    "student")
