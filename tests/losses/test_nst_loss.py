"""nst_loss (Huang & Wang 2017) against RepDistiller's NSTLoss, its closed form, hand values, gradcheck."""
import pytest
import torch
import torch.nn.functional as F

from kdforge.losses import nst_loss


def reference_poly_kernel(a, b):
    """RepDistiller b84f547 distiller_zoo/NST.py L38-42 (`NSTLoss.poly_kernel`), line by line."""
    a = a.unsqueeze(1)
    b = b.unsqueeze(2)
    res = (a * b).sum(-1).pow(2)
    return res


def reference_nst_loss(f_s, f_t):
    """RepDistiller b84f547 distiller_zoo/NST.py L16-36 (`NSTLoss.nst_loss`, full_loss=True), line by line."""
    s_H, t_H = f_s.shape[2], f_t.shape[2]
    if s_H > t_H:
        f_s = F.adaptive_avg_pool2d(f_s, (t_H, t_H))
    elif s_H < t_H:
        f_t = F.adaptive_avg_pool2d(f_t, (s_H, s_H))
    else:
        pass

    f_s = f_s.view(f_s.shape[0], f_s.shape[1], -1)
    f_s = F.normalize(f_s, dim=2)
    f_t = f_t.view(f_t.shape[0], f_t.shape[1], -1)
    f_t = F.normalize(f_t, dim=2)

    return (reference_poly_kernel(f_t, f_t).mean().detach() + reference_poly_kernel(f_s, f_s).mean()
            - 2 * reference_poly_kernel(f_s, f_t).mean())


def _maps(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def closed_form(s, t):
    """With k(x, y) = (x.y)^2, MMD^2 = || mean_j s_j s_j^T - mean_i t_i t_i^T ||_F^2 per sample, batch-averaged."""
    s = F.normalize(s.flatten(2), dim=2)
    t = F.normalize(t.flatten(2), dim=2)
    m_s = torch.einsum("bcn,bcm->bnm", s, s) / s.shape[1]
    m_t = torch.einsum("bcn,bcm->bnm", t, t) / t.shape[1]
    return (m_s - m_t).pow(2).sum((1, 2)).mean()


@pytest.mark.parametrize("s_shape,t_shape", [((3, 4, 5, 5), (3, 6, 5, 5)),   # equal sizes, other channels
                                             ((3, 4, 8, 8), (3, 6, 4, 4)),   # student pooled
                                             ((3, 4, 2, 2), (3, 6, 6, 6))])  # teacher pooled
def test_matches_the_official_code_in_value_and_gradient(s_shape, t_shape):
    s, t = _maps(0, *s_shape).requires_grad_(), _maps(1, *t_shape).requires_grad_()
    ours, ref = nst_loss(s, t), reference_nst_loss(s, t)
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-14)
    g_ours = torch.autograd.grad(ours, (s, t))
    g_ref = torch.autograd.grad(ref, (s, t))  # the teacher's gradient comes from the cross term only, in both
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-13)


def test_equals_the_squared_distance_of_mean_outer_products():
    s, t = _maps(2, 4, 3, 4, 4), _maps(3, 4, 7, 4, 4)
    assert torch.isclose(nst_loss(s, t), closed_form(s, t), rtol=1e-10)


def test_hand_values():
    # One sample, 2 positions. Student one channel (1, 0); teacher one channel (0, 1):
    # k(t,t) = 1, k(s,s) = 1, k(s,t) = 0 -> 2.
    s = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    assert nst_loss(s, torch.tensor([[[0.0, 1.0]]], dtype=torch.float64)).item() == pytest.approx(2.0)
    # Teacher channels (1, 0) and (0, 1): mean k(t,t) = (1 + 0 + 0 + 1)/4, k(s,s) = 1, mean k(s,t) = 1/2
    # -> 0.5 + 1 - 1 = 0.5 (= ||diag(1, 0) - I/2||_F^2).
    t2 = torch.tensor([[[1.0, 0.0], [0.0, 3.0]]], dtype=torch.float64)  # the 3 is normalized away
    assert nst_loss(s, t2).item() == pytest.approx(0.5)


def test_limits_and_invariances():
    s, t = _maps(4, 3, 5, 4, 4), _maps(5, 3, 8, 4, 4)
    assert nst_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-14)
    assert nst_loss(s, t).item() > 0
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(0))
    assert torch.isclose(nst_loss(s[:, perm], t), nst_loss(s, t), rtol=1e-10)            # channel order
    scale = _maps(6, 1, 5, 1, 1).abs() + 0.1
    assert torch.isclose(nst_loss(s * scale, t), nst_loss(s, t), rtol=1e-10)             # per-channel scale
    assert torch.isclose(nst_loss(s.repeat(1, 2, 1, 1), t), nst_loss(s, t), rtol=1e-10)  # duplicated channels


def test_a_wrong_variant_differs():
    """Without the per-channel L2 normalization the loss would depend on each channel's scale."""
    s, t = _maps(7, 2, 3, 4, 4), _maps(8, 2, 3, 4, 4)
    a, b = s.flatten(2), t.flatten(2)
    k = lambda x, y: torch.bmm(y, x.transpose(1, 2)).pow(2).mean()  # noqa: E731
    unnormalized = k(b, b) + k(a, a) - 2 * k(a, b)
    assert not torch.isclose(nst_loss(s, t), unnormalized, rtol=1e-3)
    a, b = F.normalize(a, dim=2), F.normalize(b, dim=2)
    linear_kernel = (torch.bmm(b, b.transpose(1, 2)).mean() + torch.bmm(a, a.transpose(1, 2)).mean()
                     - 2 * torch.bmm(b, a.transpose(1, 2)).mean())  # d = 1
    assert not torch.isclose(nst_loss(s, t), linear_kernel, rtol=1e-3)


def test_gradcheck_float64_in_the_student():
    # Only in the student: the teacher-teacher term is detached (as officially), so the teacher's analytic
    # gradient is that of the cross term alone, not the numerical one.
    s, t = _maps(9, 2, 3, 3, 3).requires_grad_(), _maps(10, 2, 2, 3, 3)
    assert torch.autograd.gradcheck(lambda a: nst_loss(a, t), (s,))
