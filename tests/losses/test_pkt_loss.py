"""pkt_loss (Passalis & Tefas 2018) against RepDistiller's PKT, hand values, invariances, gradcheck."""
import math

import pytest
import torch

from kdforge.losses import cosine_probabilities, pkt_loss


def reference_pkt_loss(output_net, target_net, eps=0.0000001):
    """RepDistiller b84f547 distiller_zoo/PKT.py L16-42 (`PKT.cosine_similarity_loss`), line by line."""
    # Normalize each vector by its norm
    output_net_norm = torch.sqrt(torch.sum(output_net ** 2, dim=1, keepdim=True))
    output_net = output_net / (output_net_norm + eps)
    output_net[output_net != output_net] = 0

    target_net_norm = torch.sqrt(torch.sum(target_net ** 2, dim=1, keepdim=True))
    target_net = target_net / (target_net_norm + eps)
    target_net[target_net != target_net] = 0

    # Calculate the cosine similarity
    model_similarity = torch.mm(output_net, output_net.transpose(0, 1))
    target_similarity = torch.mm(target_net, target_net.transpose(0, 1))

    # Scale cosine similarity to 0..1
    model_similarity = (model_similarity + 1.0) / 2.0
    target_similarity = (target_similarity + 1.0) / 2.0

    # Transform them into probabilities
    model_similarity = model_similarity / torch.sum(model_similarity, dim=1, keepdim=True)
    target_similarity = target_similarity / torch.sum(target_similarity, dim=1, keepdim=True)

    # Calculate the KL-divergence
    loss = torch.mean(target_similarity * torch.log((target_similarity + eps) / (model_similarity + eps)))

    return loss


def _emb(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_the_official_code_in_value_and_gradient(dtype):
    s, t = _emb(0, 8, 5).to(dtype).requires_grad_(), _emb(1, 8, 12).to(dtype).requires_grad_()
    ours, ref = pkt_loss(s, t), reference_pkt_loss(s, t)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert torch.allclose(ours, ref, rtol=tol, atol=0)
    g_ours = torch.autograd.grad(ours, (s, t))
    g_ref = torch.autograd.grad(ref, (s, t))
    for a, b in zip(g_ours, g_ref):
        assert torch.allclose(a, b, rtol=1e-9 if dtype == torch.float64 else 1e-4, atol=tol * 1e-2)


def test_eps_and_nan_handling_as_official():
    """A zero row divides by eps (no NaN); a NaN row is zeroed before the kernel, exactly as there."""
    s, t = _emb(2, 5, 4), _emb(3, 5, 6)
    s[1] = 0.0
    s[3, 2] = float("nan")
    value = pkt_loss(s, t)
    assert torch.isfinite(value) and torch.equal(value, reference_pkt_loss(s.clone(), t.clone()))
    # eps inside the log: a different eps changes the value the way the official code's does
    assert torch.isclose(pkt_loss(s, t, eps=1e-3), reference_pkt_loss(s.clone(), t.clone(), eps=1e-3), rtol=1e-12)


def test_hand_value():
    # Student rows e1, e2: cosines I -> (I + 1)/2 = [[1, .5], [.5, 1]] -> rows [2/3, 1/3], [1/3, 2/3].
    # Teacher rows e1, e1: cosines all 1 -> every row (1/2, 1/2).
    # mean of q log(q/p) over the 4 entries = (2 * (.5 log(.75) + .5 log(1.5))) / 4 = log(9/8) / 4.
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(cosine_probabilities(s), torch.tensor([[2 / 3, 1 / 3], [1 / 3, 2 / 3]], dtype=torch.float64))
    assert pkt_loss(s, t).item() == pytest.approx(math.log(9 / 8) / 4, rel=1e-6)


def test_limits_and_invariances():
    s, t = _emb(4, 6, 5), _emb(5, 6, 9)
    assert pkt_loss(s, s.clone()).item() == 0.0
    assert pkt_loss(s, t).item() > 0
    scales = torch.tensor([[0.1], [1.0], [3.0], [7.0], [0.5], [20.0]], dtype=torch.float64)
    assert torch.isclose(pkt_loss(scales * s, t), pkt_loss(s, t), rtol=1e-6)   # per-sample scaling
    assert torch.isclose(pkt_loss(s, 5 * t), pkt_loss(s, t), rtol=1e-6)
    q, _ = torch.linalg.qr(_emb(6, 5, 5))
    assert torch.isclose(pkt_loss(s @ q, t), pkt_loss(s, t), rtol=1e-9)         # rotations keep cosines


def test_a_wrong_variant_differs():
    s, t = _emb(7, 6, 5), _emb(8, 6, 5)
    p, q = cosine_probabilities(s), cosine_probabilities(t)
    reversed_kl = torch.mean(p * torch.log(p / q))                               # KL(student || teacher)
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    raw = torch.softmax(unit(s) @ unit(s).t(), 1), torch.softmax(unit(t) @ unit(t).t(), 1)
    softmax_kernel = torch.mean(raw[1] * torch.log(raw[1] / raw[0]))            # no rescaling to [0, 1]
    for wrong in (reversed_kl, softmax_kernel):
        assert not torch.isclose(pkt_loss(s, t), wrong, rtol=1e-3)


def test_gradcheck_float64():
    s, t = _emb(9, 4, 3).requires_grad_(), _emb(10, 4, 5).requires_grad_()
    assert torch.autograd.gradcheck(pkt_loss, (s, t))
