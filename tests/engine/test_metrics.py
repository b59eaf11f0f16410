import torch

from kdforge.engine.metrics import agreement_metrics, classification_metrics, expected_calibration_error


def test_ece_matches_torchmetrics():
    # here, not at the top: importing torchmetrics (scipy.signal, ...) takes seconds, and every xdist worker
    # collects every file
    from torchmetrics.functional.classification import multiclass_calibration_error

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 7, generator=g) * 3
    labels = torch.randint(0, 7, (500,), generator=g)
    ours = expected_calibration_error(logits, labels, n_bins=15)
    ref = multiclass_calibration_error(logits.softmax(-1), labels, num_classes=7, n_bins=15, norm="l1")
    assert abs(ours - float(ref)) < 1e-5


def test_ece_zero_for_perfectly_calibrated_confident_predictions():
    logits = torch.full((10, 3), -1e4)
    labels = torch.arange(10) % 3
    logits[torch.arange(10), labels] = 1e4
    assert expected_calibration_error(logits, labels) < 1e-6


def test_classification_metrics_hand_values():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [2.0, 0.0, 1.0]])
    labels = torch.tensor([0, 2, 2, 1])
    m = classification_metrics(logits, labels)
    assert m["top1"] == 0.5  # samples 0 and 2
    assert m["top5"] == 1.0  # 3 classes: top-k is all of them
    expected_nll = -sum(torch.log_softmax(logits, -1)[i, labels[i]] for i in range(4)) / 4
    assert abs(m["nll"] - float(expected_nll)) < 1e-6


def test_agreement_and_kl():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    m = agreement_metrics(s, t)
    assert m["agreement"] == 0.5
    pt, ps = t.softmax(-1), s.softmax(-1)
    kl = (pt * (pt.log() - ps.log())).sum(-1).mean()
    assert abs(m["kl_ts"] - float(kl)) < 1e-6
    assert agreement_metrics(t, t)["kl_ts"] < 1e-7


def test_reliability_bins_hand_values():
    from kdforge.engine.metrics import reliability_bins

    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right) in 5 bins: bin 4 holds two (acc 0.5), bin 2 one (acc 1)
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6]], dtype=torch.float64)
    b = reliability_bins(probs.log(), torch.tensor([0, 1, 1]), n_bins=5)
    assert b["count"] == [0.0, 0.0, 1.0, 0.0, 2.0]
    assert b["accuracy"][4] == 0.5 and b["accuracy"][2] == 1.0
    assert abs(b["confidence"][4] - 0.9) < 1e-9 and abs(b["confidence"][2] - 0.6) < 1e-9
    ece = expected_calibration_error(probs.log(), torch.tensor([0, 1, 1]), n_bins=5)
    assert abs(ece - (2 * 0.4 + 1 * 0.4) / 3) < 1e-6
