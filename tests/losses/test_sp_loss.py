"""sp_loss (Tung & Mori 2019) against RepDistiller's Similarity, hand values, invariances, gradcheck."""
import math

import pytest
import torch

from kdforge.losses import sp_loss


def reference_sp_loss(f_s, f_t):
    """RepDistiller b84f547 distiller_zoo/SP.py L16-30 (`Similarity.similarity_loss`), line by line."""
    bsz = f_s.shape[0]
    f_s = f_s.view(bsz, -1)
    f_t = f_t.view(bsz, -1)

    G_s = torch.mm(f_s, torch.t(f_s))
    G_s = torch.nn.functional.normalize(G_s)
    G_t = torch.mm(f_t, torch.t(f_t))
    G_t = torch.nn.functional.normalize(G_t)

    G_diff = G_t - G_s
    loss = (G_diff * G_diff).view(-1, 1).sum(0) / (bsz * bsz)
    return loss


def _feats(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("s_shape,t_shape", [((6, 3, 4, 4), (6, 8, 2, 2)), ((5, 7), (5, 11))])
def test_matches_the_official_code_in_value_and_gradient(s_shape, t_shape):
    s, t = _feats(0, *s_shape).requires_grad_(), _feats(1, *t_shape).requires_grad_()
    ours, ref = sp_loss(s, t), reference_sp_loss(s, t)
    assert ours.shape == () and ref.shape == (1,)
    assert torch.allclose(ours, ref[0], rtol=1e-12, atol=0)
    g_ours = torch.autograd.grad(ours, (s, t))
    g_ref = torch.autograd.grad(ref[0], (s, t))
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def test_hand_value():
    # Student rows e1, e2: G = I (rows already unit). Teacher rows e1, e1: G = ones, rows (1, 1)/sqrt2.
    # ||G_t - G_s||_F^2 = 2 * ((1/sqrt2 - 1)^2 + 1/2) = 4 - 2 sqrt2, divided by b^2 = 4: 1 - sqrt2/2.
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert sp_loss(s, t).item() == pytest.approx(1 - math.sqrt(2) / 2, rel=1e-12)


def test_limits_and_invariances():
    s, t = _feats(2, 6, 4, 3, 3), _feats(3, 6, 9, 3, 3)
    assert sp_loss(s, s.clone()).item() == 0.0
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(0))
    assert torch.isclose(sp_loss(s[:, perm], t), sp_loss(s, t), rtol=1e-12)  # channel permutation
    flat_perm = torch.randperm(36, generator=torch.Generator().manual_seed(1))
    assert torch.isclose(sp_loss(s.flatten(1)[:, flat_perm], t), sp_loss(s, t), rtol=1e-12)
    assert torch.isclose(sp_loss(-4.0 * s, t), sp_loss(s, t), rtol=1e-12)  # a global scale
    # Only the sample similarities count: an orthogonal map of the student's features changes nothing.
    q, _ = torch.linalg.qr(_feats(4, 36, 36))
    assert torch.isclose(sp_loss(s.flatten(1) @ q, t), sp_loss(s, t), rtol=1e-10)


def test_a_wrong_variant_differs():
    s, t = _feats(5, 4, 6), _feats(6, 4, 6)
    g_s, g_t = s @ s.t(), t @ t.t()
    unnormalized = (g_t - g_s).pow(2).sum() / 16
    over_b = (torch.nn.functional.normalize(g_t) - torch.nn.functional.normalize(g_s)).pow(2).sum() / 4
    for wrong in (unnormalized, over_b):
        assert not torch.isclose(sp_loss(s, t), wrong, rtol=1e-3)
    # and the unnormalized Gram would not be scale invariant
    assert not torch.isclose((t @ t.t() - 4 * g_s).pow(2).sum() / 16, unnormalized, rtol=1e-3)


def test_gradcheck_float64():
    s, t = _feats(7, 3, 2, 2, 2).requires_grad_(), _feats(8, 3, 5).requires_grad_()
    assert torch.autograd.gradcheck(sp_loss, (s, t))


def test_batches_must_match():
    with pytest.raises(ValueError, match="sp_loss: student batch 2 and teacher batch 3"):
        sp_loss(torch.zeros(2, 3), torch.zeros(3, 3))
