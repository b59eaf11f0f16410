"""kornia as an independent oracle for the hot-path tensor ops (kornia itself is too slow for the loop)."""
import torch

from kdforge.data.augment import flip, shift


def test_shift_equals_kornia_integer_translation_with_zero_fill():
    from kornia.geometry.transform import translate  # in the tests: importing kornia slows every worker's collection

    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 12, 10, generator=g) + 0.5  # no zeros inside, so the zero fill is visible
    offsets = torch.randint(-4, 5, (16, 2), generator=g)
    # ours: out[r, c] = in[r + dy, c + dx]; kornia translates content by (tx, ty) = (-dx, -dy)
    ref = translate(x, -offsets[:, [1, 0]].float(), mode="nearest", padding_mode="zeros", align_corners=True)
    assert torch.equal(shift(x, offsets), ref)


def test_flip_equals_kornia_hflip_on_the_masked_samples():
    from kornia.geometry.transform import hflip

    x = torch.rand(6, 1, 5, 7)
    mask = torch.tensor([True, False, True, True, False, False])
    out = flip(x, mask)
    assert torch.equal(out[mask], hflip(x[mask])) and torch.equal(out[~mask], x[~mask])
