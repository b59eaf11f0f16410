"""at_loss (Zagoruyko & Komodakis 2017) against RepDistiller's Attention, hand values, invariances, gradcheck."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdforge.losses import at_loss, pool_to_common_size


def reference_at_loss(f_s, f_t, p=2):
    """RepDistiller b84f547 distiller_zoo/AT.py L18-29 (`Attention.at_loss`, `Attention.at`), line by line."""
    def at(f):
        return F.normalize(f.pow(p).mean(1).view(f.size(0), -1))

    s_H, t_H = f_s.shape[2], f_t.shape[2]
    if s_H > t_H:
        f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
    elif s_H < t_H:
        f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))
    else:
        pass
    return (at(f_s) - at(f_t)).pow(2).mean()


def _maps(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("s_shape,t_shape", [((4, 3, 8, 8), (4, 6, 8, 8)),   # equal sizes, other channels
                                             ((4, 3, 8, 8), (4, 6, 4, 4)),   # student pooled
                                             ((4, 3, 2, 2), (4, 6, 6, 6))])  # teacher pooled
@pytest.mark.parametrize("p", [2, 4])
def test_matches_the_official_code_in_value_and_gradient(s_shape, t_shape, p):
    s, t = _maps(0, *s_shape).requires_grad_(), _maps(1, *t_shape)
    ours, ref = at_loss(s, t, p), reference_at_loss(s, t, p)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=0)
    g_ours, = torch.autograd.grad(ours, s)
    g_ref, = torch.autograd.grad(ref, s)
    assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-14)


def test_hand_values():
    # One sample, positions (a, b). Student channels [1, 1] and [1, -1]: mean of squares [1, 1] -> (1, 1)/sqrt 2.
    # Teacher one channel [2, 0]: squares [4, 0] -> (1, 0). Differences (1/sqrt2 - 1, 1/sqrt2), squared and averaged
    # over 2 positions: ((1/sqrt2 - 1)^2 + 1/2) / 2 = 1 - 1/sqrt2.
    s = torch.tensor([[[[1.0, 1.0]], [[1.0, -1.0]]]], dtype=torch.float64)  # [1, 2, 1, 2]
    t = torch.tensor([[[[2.0, 0.0]]]], dtype=torch.float64)               # [1, 1, 1, 2]
    assert at_loss(s, t).item() == pytest.approx(1 - 1 / math.sqrt(2), rel=1e-12)
    # Disjoint attention (1, 0) vs (0, 1): squared differences 1 and 1, mean 1.
    assert at_loss(t, t.flip(-1)).item() == pytest.approx(1.0, rel=1e-12)


def test_limits_and_invariances():
    s, t = _maps(2, 3, 4, 5, 5), _maps(3, 3, 7, 5, 5)
    assert at_loss(s, s.clone()).item() == 0.0
    assert torch.isclose(at_loss(3.5 * s, t), at_loss(s, t), rtol=1e-12)        # scaling the student's map
    assert torch.isclose(at_loss(s, 0.01 * t), at_loss(s, t), rtol=1e-12)       # and the teacher's
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    assert torch.isclose(at_loss(s, t[:, perm]), at_loss(s, t), rtol=1e-12)     # channel order is summed out
    # Replicating channels does not change the channel mean: only the spatial pattern counts.
    assert torch.isclose(at_loss(s.repeat(1, 3, 1, 1), t), at_loss(s, t), rtol=1e-12)


def test_a_wrong_variant_differs():
    """Without the L2 normalization of the maps the loss would depend on the feature scale."""
    s, t = _maps(4, 2, 3, 4, 4), _maps(5, 2, 3, 4, 4)
    unnormalized = (s.pow(2).mean(1).flatten(1) - t.pow(2).mean(1).flatten(1)).pow(2).mean()
    assert not torch.isclose(at_loss(s, t), unnormalized, rtol=1e-3)
    at_s, at_t = F.normalize(s.pow(2).mean(1).flatten(1)), F.normalize(t.pow(2).mean(1).flatten(1))
    summed_not_averaged = (at_s - at_t).pow(2).sum()
    assert not torch.isclose(at_loss(s, t), summed_not_averaged, rtol=1e-3)


def test_gradcheck_float64():
    s, t = _maps(6, 2, 3, 4, 4).requires_grad_(), _maps(7, 2, 2, 2, 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: at_loss(a, b), (s, t))


def test_one_dimensional_maps_and_pooling_per_dim():
    s, t = _maps(8, 2, 3, 12), _maps(9, 2, 5, 6)
    pooled_s, same_t = pool_to_common_size(s, t, "x")
    assert pooled_s.shape == (2, 3, 6) and same_t is t
    assert torch.allclose(pooled_s, s.view(2, 3, 6, 2).mean(-1))
    assert torch.isclose(at_loss(s, t), at_loss(pooled_s, t), rtol=1e-12)
    a, b = pool_to_common_size(_maps(0, 1, 1, 8, 4), _maps(1, 1, 1, 4, 8), "x")  # non-square: per dim
    assert a.shape[2:] == b.shape[2:] == (4, 4)


def test_shapes_it_refuses():
    with pytest.raises(ValueError, match="at_loss: needs student and teacher feature maps"):
        at_loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at_loss"):
        at_loss(torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4))
