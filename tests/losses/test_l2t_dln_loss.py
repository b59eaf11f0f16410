"""L2T-DLN's loss pieces against the official code's layout (1017137588qqcom/L2T-DLN, DLN_LSTM.py), hand-computed
values and limit cases."""
import math

import torch
import torch.nn.functional as F

from kdforge.losses import dln_loss, loss_network, one_vs_one_pairs, preprocess_gradients


def _official_pairs(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`MetaOptimizer.forward` up to the network, line by line (CPU)."""
    y_onehot = torch.zeros_like(x).scatter_(1, y.long().unsqueeze(-1), 1).float()
    bs, num_cate = x.size()
    x = torch.sigmoid(x)
    truth_pred = torch.sum(x * y_onehot, 1).view(-1, 1, 1)
    false_pred = (x * (1 - y_onehot)).view(-1, num_cate, 1)
    predict = torch.cat((torch.ones_like(false_pred) * truth_pred, false_pred), -1).view(-1, 2)
    false_label = (1 - y_onehot).view(-1, 1)
    predict = predict * false_label
    y_label = (torch.zeros(predict.shape[0], 2) + torch.tensor([1.0, 0.0])) * false_label
    return torch.cat((predict, y_label), -1).view(-1, 4)


def test_pairs_match_the_official_layout_and_a_hand_computed_row():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(5, 4, generator=g), torch.tensor([0, 3, 1, 1, 2])
    pairs = one_vs_one_pairs(logits, labels)
    assert pairs.shape == (20, 4)
    assert torch.equal(pairs, _official_pairs(logits, labels))
    s = torch.sigmoid(logits[1])  # sample 1, true class 3: row of class 0 and the zero row of class 3
    assert torch.allclose(pairs[4], torch.stack([s[3], s[0], torch.tensor(1.0), torch.tensor(0.0)]))
    assert torch.equal(pairs[7], torch.zeros(4))


def test_loss_network_is_a_bias_free_leaky_mlp_and_the_loss_a_mean_over_all_rows():
    w1 = torch.tensor([[1.0, -2.0, 0.5, 3.0], [-1.0, 1.0, -1.0, 0.0]])
    w2 = torch.tensor([[2.0, -3.0]])
    row = torch.tensor([[0.8, 0.3, 1.0, 0.0]])
    # hidden: (0.8 - 0.6 + 0.5) = 0.7 -> 0.7; (-0.8 + 0.3 - 1) = -1.5 -> -0.015; out = 1.4 + 0.045
    assert torch.allclose(loss_network(row, [w1, w2]), torch.tensor([1.445]))
    assert torch.equal(loss_network(torch.zeros(3, 4), [w1, w2]), torch.zeros(3))  # true-class rows add 0
    logits, labels = torch.tensor([[2.0, -1.0, 0.0]]), torch.tensor([0])
    per_row = loss_network(one_vs_one_pairs(logits, labels), [w1, w2])
    assert torch.allclose(dln_loss(logits, labels, [w1, w2]), per_row.sum() / 3)  # the zero row is counted


def test_loss_gradients_reach_the_logits_and_the_weights():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weights = [torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True),
               torch.randn(1, 5, generator=g, dtype=torch.float64, requires_grad=True)]
    labels = torch.tensor([1, 0, 3])
    assert torch.autograd.gradcheck(lambda z, a, b: dln_loss(z, labels, [a, b]), (logits, *weights))


def test_gradient_preprocessing_both_branches():
    p = 10.0
    g = torch.tensor([0.5, -2.0, 1e-6, -3e-5, 0.0])
    out = preprocess_gradients(g, p)
    assert torch.allclose(out[0], torch.tensor([math.log(0.5 + 1e-8) / p, 1.0]))
    assert torch.allclose(out[1], torch.tensor([math.log(2.0 + 1e-8) / p, -1.0]))
    assert torch.allclose(out[2], torch.tensor([-1.0, math.exp(p) * 1e-6]))  # below e^-10 ~ 4.5e-5
    assert torch.allclose(out[3], torch.tensor([-1.0, -math.exp(p) * 3e-5]))
    assert torch.equal(out[4], torch.tensor([-1.0, 0.0]))
    # the two branches meet continuously in the second coordinate's magnitude at the threshold
    t = math.exp(-p)
    assert torch.allclose(preprocess_gradients(torch.tensor([t * 1.0001]), p)[0, 0], torch.tensor(-1.0), atol=1e-3)
    assert F.mse_loss(preprocess_gradients(torch.tensor([t * 0.9999]), p)[0], torch.tensor([-1.0, 0.9999])) < 1e-6


def test_logit_stats_by_hand():
    from kdforge.losses.l2t_dln import logit_stats

    logits, labels = torch.tensor([[2.0, 0.0, -2.0], [1.0, 3.0, -1.0]]), torch.tensor([0, 0])
    s = logit_stats(logits, labels)
    assert s["logit_true"] == 1.5 and s["logit_other"] == 0.0  # (2 + 1) / 2; (0 - 2 + 3 - 1) / 4
    assert torch.isclose(s["sig_true"], (torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(1.0))) / 2)
    assert torch.isclose(s["sig_other"], torch.sigmoid(torch.tensor([0.0, -2.0, 3.0, -1.0])).mean())
    assert s["inner_top1"] == 0.5
