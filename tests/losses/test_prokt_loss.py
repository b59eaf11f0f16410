"""ProKT's pieces: the guide's projected objective (hand-derived gradient, limits) and the exact KL mirror-descent
step it approximates (optimality on the simplex)."""
import torch
import torch.nn.functional as F

from kdforge.losses import mirror_descent_target, prokt_teacher_loss


def test_teacher_loss_is_ce_plus_lambda_kl_to_the_student():
    g = torch.Generator().manual_seed(0)
    t, s, y = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g), torch.randint(5, (6,), generator=g)
    q, p = F.softmax(t, 1), F.softmax(s, 1)
    kl = (q * (q.log() - p.log())).sum(1).mean()
    assert torch.allclose(prokt_teacher_loss(t, s, y, 0.7), F.cross_entropy(t, y) + 0.7 * kl)
    assert torch.allclose(prokt_teacher_loss(t, s, y, 0.0), F.cross_entropy(t, y))  # lambda = 0: plain CE
    assert torch.allclose(prokt_teacher_loss(t, t, y, 5.0), F.cross_entropy(t, y))  # at the student: no pull
    qt, pt = F.softmax(t / 2, 1), F.softmax(s / 2, 1)
    kl_t = (qt * (qt.log() - pt.log())).sum(1).mean()
    assert torch.allclose(prokt_teacher_loss(t, s, y, 0.7, temperature=2.0), F.cross_entropy(t, y) + 0.7 * kl_t)


def test_teacher_loss_gradient_matches_the_hand_derivation_and_leaves_the_student_alone():
    # d/du [CE(u, y) + lam KL(softmax(u) || p)] = (q - e_y) + lam * q * (log q - log p - KL)   per sample, / B
    g = torch.Generator().manual_seed(1)
    u = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y, lam = torch.tensor([0, 2, 1, 1]), 1.3
    prokt_teacher_loss(u, s, y, lam).backward()
    q, logp = F.softmax(u.detach(), 1), F.log_softmax(s.detach(), 1)
    kl = (q * (q.log() - logp)).sum(1, keepdim=True)
    expected = ((q - F.one_hot(y, 3)) + lam * q * (q.log() - logp - kl)) / 4
    assert torch.allclose(u.grad, expected)
    assert s.grad is None  # the student's logits are a constant of the guide's loss


def test_mirror_descent_target_is_the_kl_proximal_minimiser():
    g = torch.Generator().manual_seed(2)
    s, grad = torch.randn(3, 6, generator=g, dtype=torch.float64), torch.randn(3, 6, generator=g, dtype=torch.float64)
    eta = 0.8
    log_q = mirror_descent_target(s, grad, eta)
    assert torch.allclose(log_q.exp().sum(1), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(mirror_descent_target(s, grad, 0.0), F.log_softmax(s, 1))  # step 0: the student itself

    def objective(logq):  # <grad, q> + KL(q || p_S) / eta
        q = logq.exp()
        return (grad * q).sum(1) + (q * (logq - F.log_softmax(s, 1))).sum(1) / eta

    best = objective(log_q)
    for k in range(20):  # every other point of the simplex scores worse
        other = F.log_softmax(log_q + 0.3 * torch.randn(3, 6, generator=g, dtype=torch.float64), 1)
        assert (objective(other) > best).all(), k
    # one-hot gradient of CE at the target class: the target moves mass onto that class
    ce_grad = -F.one_hot(torch.tensor([1, 1, 1]), 6).double()
    assert (mirror_descent_target(s, ce_grad, 1.0)[:, 1] > F.log_softmax(s, 1)[:, 1]).all()
