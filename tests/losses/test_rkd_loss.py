"""rkd_loss (Park et al. 2019) against RepDistiller's RKDLoss, hand values, invariances, gradcheck."""
import math

import pytest
import torch
import torch.nn.functional as F

from kdforge.losses import pairwise_distances, rkd_angle_loss, rkd_distance_loss, rkd_loss


def reference_pdist(e, squared=False, eps=1e-12):
    """RepDistiller b84f547 distiller_zoo/RKD.py L47-58 (`RKDLoss.pdist`), line by line."""
    e_square = e.pow(2).sum(dim=1)
    prod = e @ e.t()
    res = (e_square.unsqueeze(1) + e_square.unsqueeze(0) - 2 * prod).clamp(min=eps)

    if not squared:
        res = res.sqrt()

    res = res.clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def reference_rkd_loss(f_s, f_t, w_d=25, w_a=50):
    """RepDistiller b84f547 distiller_zoo/RKD.py L15-45 (`RKDLoss.forward`), line by line."""
    student = f_s.view(f_s.shape[0], -1)
    teacher = f_t.view(f_t.shape[0], -1)

    # RKD distance loss
    with torch.no_grad():
        t_d = reference_pdist(teacher, squared=False)
        mean_td = t_d[t_d > 0].mean()
        t_d = t_d / mean_td

    d = reference_pdist(student, squared=False)
    mean_d = d[d > 0].mean()
    d = d / mean_d

    loss_d = F.smooth_l1_loss(d, t_d)

    # RKD Angle loss
    with torch.no_grad():
        td = (teacher.unsqueeze(0) - teacher.unsqueeze(1))
        norm_td = F.normalize(td, p=2, dim=2)
        t_angle = torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1)

    sd = (student.unsqueeze(0) - student.unsqueeze(1))
    norm_sd = F.normalize(sd, p=2, dim=2)
    s_angle = torch.bmm(norm_sd, norm_sd.transpose(1, 2)).view(-1)

    loss_a = F.smooth_l1_loss(s_angle, t_angle)

    loss = w_d * loss_d + w_a * loss_a

    return loss


def _emb(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("weights", [(25.0, 50.0), (1.0, 0.0), (0.0, 2.0)])
def test_matches_the_official_code_in_value_and_gradient(weights):
    s, t = _emb(0, 7, 5).requires_grad_(), 3 * _emb(1, 7, 12)
    ours, ref = rkd_loss(s, t, *weights), reference_rkd_loss(s, t, *weights)
    assert torch.allclose(ours, ref, rtol=1e-12, atol=0)
    g_ours, = torch.autograd.grad(ours, s)
    g_ref, = torch.autograd.grad(ref, s)
    assert torch.allclose(g_ours, g_ref, rtol=1e-10, atol=1e-14)


def test_pairwise_distances_match_the_official_pdist_with_duplicates():
    e = _emb(2, 5, 3)
    e[3] = e[1]  # a duplicate pair: clamped to eps, so sqrt(eps) and still counted as a "non-zero" pair
    assert torch.equal(pairwise_distances(e), reference_pdist(e))
    assert pairwise_distances(e)[1, 3].item() == pytest.approx(1e-6, rel=1e-3)
    s = _emb(3, 5, 4)
    assert torch.allclose(rkd_loss(s, e), reference_rkd_loss(s, e), rtol=1e-12)


# Student: the right triangle (0,0), (1,0), (0,1). Teacher: collinear (0,0), (1,0), (2,0).
S = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
T = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)


def test_distance_hand_value():
    # Student distances 1, 1, sqrt2 (mean over the 6 off-diagonal entries (2 + sqrt2)/3); teacher 1, 2, 1 (mean 4/3).
    mu_s, mu_t = (2 + math.sqrt(2)) / 3, 4 / 3
    pairs = [(1 / mu_s, 1 / mu_t), (1 / mu_s, 2 / mu_t), (math.sqrt(2) / mu_s, 1 / mu_t)]  # (0,1), (0,2), (1,2)
    huber = lambda d: 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5  # noqa: E731  (smooth L1, beta 1)
    expected = 2 * sum(huber(a - b) for a, b in pairs) / 9  # both orders; the diagonal is 0 on both sides
    assert rkd_distance_loss(S, T).item() == pytest.approx(expected, rel=1e-12)


def test_angle_hand_value():
    # cos of the angle at i between j and k (j != k, both != i); all other triplets agree (1 for j = k != i, else 0).
    # at 0: student 0 (right angle), teacher 1 -> |d| = 1 -> 1 - 0.5 = 0.5
    # at 1: student 1/sqrt2, teacher -1 -> |d| = 1 + 1/sqrt2 -> 0.5 + 1/sqrt2
    # at 2: student 1/sqrt2, teacher 1 -> |d| = 1 - 1/sqrt2 < 1 -> 0.5 (1 - 1/sqrt2)^2
    # The three sum to 1.75; each appears for (j, k) and (k, j), over 27 triplets: 3.5 / 27.
    assert rkd_angle_loss(S, T).item() == pytest.approx(3.5 / 27, rel=1e-12)
    assert rkd_loss(S, T, 2.0, 3.0).item() == pytest.approx(
        2 * rkd_distance_loss(S, T).item() + 3 * 3.5 / 27, rel=1e-12)


def test_limits_and_invariances():
    s, t = _emb(4, 6, 5), _emb(5, 6, 8)
    assert rkd_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert rkd_loss(S, 2 * S).item() == pytest.approx(0.0, abs=1e-12)  # a scaled copy has the same relations
    shift = _emb(6, 1, 5)
    assert torch.isclose(rkd_loss(3 * s, t), rkd_loss(s, t), rtol=1e-9)            # both potentials: scaling
    assert torch.isclose(rkd_angle_loss(s + shift, t), rkd_angle_loss(s, t), rtol=1e-9)  # angles: translation
    q, _ = torch.linalg.qr(_emb(7, 5, 5))
    assert torch.isclose(rkd_loss(s @ q, t), rkd_loss(s, t), rtol=1e-9)            # and rotation


def test_a_wrong_variant_differs():
    """Without the mean-distance normalization the distance term would not be scale invariant."""
    s, t = _emb(8, 6, 5), _emb(9, 6, 5)
    unnormalized = F.smooth_l1_loss(pairwise_distances(s), pairwise_distances(t))
    assert not torch.isclose(rkd_distance_loss(s, t), unnormalized, rtol=1e-3)
    assert not torch.isclose(F.smooth_l1_loss(pairwise_distances(3 * s), pairwise_distances(t)), unnormalized,
                             rtol=1e-3)
    squared = F.smooth_l1_loss(pairwise_distances(s) ** 2 / (pairwise_distances(s) ** 2).sum() * 30,
                               pairwise_distances(t) ** 2 / (pairwise_distances(t) ** 2).sum() * 30)
    assert not torch.isclose(rkd_distance_loss(s, t), squared, rtol=1e-3)


def test_the_teacher_gets_no_gradient_and_the_student_passes_gradcheck():
    s, t = _emb(10, 4, 3).requires_grad_(), _emb(11, 4, 6).requires_grad_()
    rkd_loss(s, t).backward()
    assert t.grad is None and s.grad is not None
    assert torch.autograd.gradcheck(lambda a: rkd_loss(a, t.detach()), (s.detach().requires_grad_(),))


def test_batches_must_match():
    with pytest.raises(ValueError, match="rkd_loss: student batch 2 and teacher batch 3"):
        rkd_loss(torch.zeros(2, 3), torch.zeros(3, 3))
