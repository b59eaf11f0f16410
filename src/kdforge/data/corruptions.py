"""Corrupted copies of a test split, for robustness evaluation (`data.eval_corruptions`): pure functions of image
tensors [N, C, H, W], each at one fixed severity and seed, so a table regenerates and every run of a plan is
scored on the very same corrupted images.

kdforge's sources standardize each channel with the training split's statistics, so amplitudes are in units of
the data's per-channel standard deviation and nothing is clipped (there is no pixel range after standardizing).

| name             | what                                                                 | severity          |
|------------------|----------------------------------------------------------------------|-------------------|
| `gaussian_noise` | x + sigma * N(0, 1), i.i.d. per value                                | sigma = 0.5 std   |
| `gaussian_blur`  | separable Gaussian, radius ceil(3 sigma), half-sample symmetric border | sigma = 1.0 pixel |
| `patch_shuffle`  | the image cut into a g x g grid of patches, permuted per image       | g = 4             |

Noise and blur destroy fine texture (high frequencies) and keep the global shape; patch shuffle does the
opposite, keeping the texture inside each patch and destroying the global shape, so a shape-biased model
(InfoDrop's aim) should gain on the first two and lose on the third. The symmetric border (the image mirrored
about its edge, edge pixel repeated, scipy.ndimage's "reflect") makes the blur keep each channel's sum exactly.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
import torch
from torch import Tensor
from torch.nn import functional as F

from kdforge.data.types import DataSpec
from kdforge.errors import ConfigError

NOISE_SIGMA = 0.5  # in units of the data's per-channel std: about 0.18 of the [0, 1] range on Fashion-MNIST
BLUR_SIGMA = 1.0  # pixels (CIFAR-10-C's gaussian_blur severity 5)
SHUFFLE_GRID = 4  # 4 x 4 patches: 7 x 7 on 28 x 28 images, 8 x 8 on 32 x 32
SEED = 0  # one fixed seed for every corruption: the same corrupted test set for every run and row


def gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """x + sigma * N(0, 1), drawn for the whole tensor at once (so independent of any batching)."""
    return x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def gaussian_kernel(sigma: float) -> Tensor:
    """The normalized 1-D Gaussian exp(-k^2 / (2 sigma^2)) at k = -r..r, r = ceil(3 sigma), in float64."""
    r = math.ceil(3 * sigma)
    k = torch.arange(-r, r + 1, dtype=torch.float64)
    w = torch.exp(-k**2 / (2 * sigma**2))
    return w / w.sum()


def symmetric_index(n: int, r: int) -> Tensor:
    """Source positions of a length-n axis extended by r on both sides by half-sample symmetric reflection
    (d c b a | a b c d | d c b a, repeated for any r): position i reads i mod 2n, folded back into [0, n)."""
    j = torch.arange(-r, n + r).remainder(2 * n)
    return torch.where(j >= n, 2 * n - 1 - j, j)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Each channel convolved with a Gaussian along H, then along W, on the symmetric extension of the image.
    The extension is 2n-periodic and mirror-symmetric, so with a symmetric, normalized kernel the blurred image
    keeps every channel's sum (its mean) exactly, whatever its size."""
    w = gaussian_kernel(sigma).to(x.dtype).to(x.device)
    r, c = (len(w) - 1) // 2, x.shape[1]
    h_idx, w_idx = symmetric_index(x.shape[-2], r).to(x.device), symmetric_index(x.shape[-1], r).to(x.device)
    out = F.conv2d(x.index_select(-2, h_idx), w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(out.index_select(-1, w_idx), w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def patch_shuffle(x: Tensor, grid: int, generator: torch.Generator) -> Tensor:
    """The H x W image cut into grid x grid equal patches (H and W divisible by grid), placed in a random order
    drawn per image (uniform permutations: the identity included, 1 / (grid^2)! of the time)."""
    n, c, h, w = x.shape
    if h % grid or w % grid:
        raise ValueError(f"patch_shuffle: a {h}x{w} image does not split into a {grid}x{grid} grid")
    ph, pw, g2 = h // grid, w // grid, grid * grid
    patches = x.reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, g2, c, ph, pw)
    order = torch.rand(n, g2, generator=generator).argsort(-1).to(x.device)
    shuffled = patches.gather(1, order.view(n, g2, 1, 1, 1).expand_as(patches))
    return shuffled.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


CORRUPTIONS: dict[str, Callable[[Tensor, torch.Generator], Tensor]] = {
    "gaussian_noise": lambda x, g: gaussian_noise(x, NOISE_SIGMA, g),
    "gaussian_blur": lambda x, g: gaussian_blur(x, BLUR_SIGMA),
    "patch_shuffle": lambda x, g: patch_shuffle(x, SHUFFLE_GRID, g),
}
# The schema's `data.eval_corruptions` names these (config.schema.CorruptionName; tests/data/test_corruptions.py
# keeps the two lists equal).


def corrupt(x: Tensor, name: str) -> Tensor:
    """`x` [N, C, H, W] under corruption `name` at its fixed severity, from a generator seeded with SEED."""
    return CORRUPTIONS[name](x, torch.Generator().manual_seed(SEED))


def check_images(names: Sequence[str], spec: DataSpec, key: str = "data.eval_corruptions") -> None:
    """ConfigError (one line) unless the data are image tensors that every named corruption can take."""
    if not names:
        return
    if spec.kind != "tensor" or len(spec.input_shape) != 3:
        raise ConfigError(f"{key}: corruptions need image tensors [N, C, H, W], but {spec.name!r} is {spec.kind} data "
                          f"of sample shape {spec.input_shape}; remove {key}")
    h, w = spec.input_shape[1:]
    if "patch_shuffle" in names and (h % SHUFFLE_GRID or w % SHUFFLE_GRID):
        raise ConfigError(f"{key}: patch_shuffle cuts images into a {SHUFFLE_GRID}x{SHUFFLE_GRID} grid, which "
                          f"{spec.name!r}'s {h}x{w} images do not divide into; remove patch_shuffle")
