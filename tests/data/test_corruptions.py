"""Test-set corruptions: hand values on tiny images, the invariants each one promises, determinism, bad input."""
import math

import pytest
import torch
from torch import nn

from kdforge.config.schema import DataConfig
from kdforge.data import Split
from kdforge.data.corruptions import (
    BLUR_SIGMA, NOISE_SIGMA, SEED, SHUFFLE_GRID, check_images, corrupt, gaussian_blur, gaussian_kernel, gaussian_noise,
    patch_shuffle, symmetric_index,
)
from kdforge.data.types import DataSpec
from kdforge.engine.metrics import corruption_metrics, evaluate
from kdforge.errors import ConfigError

NAMES = ("gaussian_noise", "gaussian_blur", "patch_shuffle")


def test_the_schema_names_exactly_the_implemented_corruptions():
    from typing import get_args

    from kdforge.config.schema import CorruptionName
    from kdforge.data.corruptions import CORRUPTIONS

    assert set(get_args(CorruptionName)) == set(CORRUPTIONS) == set(NAMES)


def _images(n=6, c=3, h=8, w=12, seed=0):
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_determinism(name):
    x = _images()
    a, b = corrupt(x, name), corrupt(x.clone(), name)
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b)
    assert not torch.equal(a, x)
    assert torch.equal(x, _images())  # the input is not modified


def test_noise_is_the_seeded_normal_draw_scaled():
    x = _images()
    expected = x + NOISE_SIGMA * torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED), dtype=x.dtype)
    assert torch.equal(corrupt(x, "gaussian_noise"), expected)
    big = gaussian_noise(torch.zeros(200_000), 0.5, torch.Generator().manual_seed(1))
    assert abs(big.mean().item()) < 0.01 and big.std().item() == pytest.approx(0.5, rel=0.01)


def test_symmetric_index_by_hand():
    # half-sample symmetric: c b a | a b c d | d c b, and for a radius beyond the axis the reflection repeats
    assert symmetric_index(4, 3).tolist() == [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]
    assert symmetric_index(2, 3).tolist() == [1, 1, 0, 0, 1, 1, 0, 0]


def test_blur_of_a_dot_by_hand():
    w = [math.exp(-k * k / 2) for k in range(4)]  # sigma 1: radius 3
    z = w[0] + 2 * (w[1] + w[2] + w[3])
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    x[0, 0, 4, 4] = 1.0  # far enough from the border: the 2-D kernel itself
    out = gaussian_blur(x, 1.0)[0, 0]
    assert out[4, 4].item() == pytest.approx((w[0] / z) ** 2, rel=1e-12)
    assert out[4, 6].item() == pytest.approx(w[0] * w[2] / z**2, rel=1e-12)
    assert out[1, 7].item() == pytest.approx(w[3] ** 2 / z**2, rel=1e-12) and out[0, 0] == 0
    corner = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    corner[0, 0, 0, 0] = 1.0  # the mirrored copy at position -1 folds back onto the corner: (w0 + w1)^2
    assert gaussian_blur(corner, 1.0)[0, 0, 0, 0].item() == pytest.approx(((w[0] + w[1]) / z) ** 2, rel=1e-12)
    assert gaussian_kernel(1.0).sum().item() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("size", [(8, 12), (5, 7), (2, 2), (1, 3)])
def test_blur_keeps_each_channels_mean_and_constants(size):
    x = _images(h=size[0], w=size[1])
    out = gaussian_blur(x, BLUR_SIGMA)
    assert torch.allclose(out.mean((-2, -1)), x.mean((-2, -1)), rtol=0, atol=1e-12)
    assert out.std() < x.std()  # it smooths
    flat = torch.full((2, 3, *size), 0.7, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(flat, BLUR_SIGMA), flat, rtol=0, atol=1e-15)


def _patches(img, grid):
    c, h, w = img.shape
    return [img[:, i * h // grid:(i + 1) * h // grid, j * w // grid:(j + 1) * w // grid]
            for i in range(grid) for j in range(grid)]


def test_patch_shuffle_permutes_whole_patches():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)  # every value distinct
    out = patch_shuffle(x, 4, torch.Generator().manual_seed(0))
    for img, shuffled in zip(x, out):
        before, after = _patches(img, 4), _patches(shuffled, 4)
        match = [next(i for i, p in enumerate(before) if torch.equal(p, q)) for q in after]  # each patch intact
        assert sorted(match) == list(range(16)) and match != list(range(16))  # a permutation, not the identity
    assert not torch.equal(out[0], out[1] - 192)  # each image draws its own order


def test_patch_shuffle_by_hand_and_limits():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # grid 2: quadrants [[0, 1], [4, 5]], [[2, 3], [6, 7]], [[8, 9], [12, 13]], [[10, 11], [14, 15]]
    order = torch.rand(1, 4, generator=torch.Generator().manual_seed(3)).argsort(-1)[0].tolist()
    quads = [torch.tensor([[0.0, 1], [4, 5]]), torch.tensor([[2.0, 3], [6, 7]]),
             torch.tensor([[8.0, 9], [12, 13]]), torch.tensor([[10.0, 11], [14, 15]])]
    expected = torch.cat([torch.cat([quads[order[0]], quads[order[1]]], 1),
                          torch.cat([quads[order[2]], quads[order[3]]], 1)], 0)
    assert torch.equal(patch_shuffle(x, 2, torch.Generator().manual_seed(3))[0, 0], expected)
    assert torch.equal(patch_shuffle(x, 1, torch.Generator().manual_seed(0)), x)  # one patch: nothing moves
    with pytest.raises(ValueError, match="3x3 grid"):
        patch_shuffle(x, 3, torch.Generator())


def test_only_image_tensors_are_accepted():
    check_images([], DataSpec("trec", (20,), 6, kind="tokens"))  # nothing asked: anything goes
    check_images(list(NAMES), DataSpec("cifar10", (3, 32, 32), 10))
    with pytest.raises(ConfigError, match=r"^data\.eval_corruptions: corruptions need image tensors \[N, C, H, W\], "
                                          r"but 'trec' is tokens data"):
        check_images(["gaussian_blur"], DataSpec("trec", (20,), 6, kind="tokens"))
    with pytest.raises(ConfigError, match=r"'mnist1d' is tensor data of sample shape \(40,\)"):
        check_images(["gaussian_noise"], DataSpec("mnist1d", (40,), 10))
    with pytest.raises(ConfigError, match=rf"patch_shuffle cuts images into a {SHUFFLE_GRID}x{SHUFFLE_GRID} grid"):
        check_images(["patch_shuffle"], DataSpec("odd", (1, 30, 30), 10))
    with pytest.raises(ConfigError, match=r"^data\.eval_corruptions\.0: .*'gaussian_noise'"):
        DataConfig(name="digits", eval_corruptions=["blur"])


def test_corruption_metrics_score_the_corrupted_split():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 12, 4))
    split = Split(_images(n=40).float(), torch.arange(40) % 4)
    got = corruption_metrics(model, split, NAMES, 16, torch.device("cpu"))
    assert list(got) == [f"top1@{n}" for n in NAMES]
    for name in NAMES:
        want = evaluate(model, Split(corrupt(split.x, name), split.y), 7, torch.device("cpu"))["top1"]
        assert got[f"top1@{name}"] == want  # batching plays no part
    assert corruption_metrics(model, split.unlabel(), NAMES, 16, torch.device("cpu")) == {}
