"""CRD: the memory against RepDistiller's ContrastMemory, its update rule by hand, its negatives, the method's
terms from a config, and a run stopped after its first epoch and resumed that ends bit-identical."""
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kdforge.models as models
from kdforge.data import Batches
from kdforge.engine import Trainer, latest_checkpoint, load_checkpoint, seed_everything
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.errors import ConfigError
from kdforge.losses import crd_nce_loss
from kdforge.methods import MethodSpec, Setup, build as build_method
from kdforge.methods.crd import ContrastMemory
from kdforge.models import ModelSpec
from kdforge.teachers import LiveTeacher

sys.path.insert(0, str(Path(__file__).parents[1]))
from support import Stop, stop_after  # noqa: E402


class _RefContrastMemory(nn.Module):
    """HobbitLong/RepDistiller@b84f547 crd/memory.py L6-79; __init__ takes the initial memories instead of drawing
    them and builds no AliasMethod (the test passes contrast indices), the print is dropped; forward verbatim."""
    def __init__(self, memory_v1, memory_v2, K, T=0.07, momentum=0.5):
        super(_RefContrastMemory, self).__init__()
        self.K = K
        self.register_buffer('params', torch.tensor([K, T, -1, -1, momentum]))
        self.register_buffer('memory_v1', memory_v1.clone())
        self.register_buffer('memory_v2', memory_v2.clone())

    def forward(self, v1, v2, y, idx=None):
        K = int(self.params[0].item())
        T = self.params[1].item()
        Z_v1 = self.params[2].item()
        Z_v2 = self.params[3].item()

        momentum = self.params[4].item()
        batchSize = v1.size(0)
        outputSize = self.memory_v1.size(0)
        inputSize = self.memory_v1.size(1)

        # sample
        weight_v1 = torch.index_select(self.memory_v1, 0, idx.view(-1)).detach()
        weight_v1 = weight_v1.view(batchSize, K + 1, inputSize)
        out_v2 = torch.bmm(weight_v1, v2.view(batchSize, inputSize, 1))
        out_v2 = torch.exp(torch.div(out_v2, T))
        # sample
        weight_v2 = torch.index_select(self.memory_v2, 0, idx.view(-1)).detach()
        weight_v2 = weight_v2.view(batchSize, K + 1, inputSize)
        out_v1 = torch.bmm(weight_v2, v1.view(batchSize, inputSize, 1))
        out_v1 = torch.exp(torch.div(out_v1, T))

        # set Z if haven't been set yet
        if Z_v1 < 0:
            self.params[2] = out_v1.mean() * outputSize
            Z_v1 = self.params[2].clone().detach().item()
        if Z_v2 < 0:
            self.params[3] = out_v2.mean() * outputSize
            Z_v2 = self.params[3].clone().detach().item()

        # compute out_v1, out_v2
        out_v1 = torch.div(out_v1, Z_v1).contiguous()
        out_v2 = torch.div(out_v2, Z_v2).contiguous()

        # update memory
        with torch.no_grad():
            l_pos = torch.index_select(self.memory_v1, 0, y.view(-1))
            l_pos.mul_(momentum)
            l_pos.add_(torch.mul(v1, 1 - momentum))
            l_norm = l_pos.pow(2).sum(1, keepdim=True).pow(0.5)
            updated_v1 = l_pos.div(l_norm)
            self.memory_v1.index_copy_(0, y, updated_v1)

            ab_pos = torch.index_select(self.memory_v2, 0, y.view(-1))
            ab_pos.mul_(momentum)
            ab_pos.add_(torch.mul(v2, 1 - momentum))
            ab_norm = ab_pos.pow(2).sum(1, keepdim=True).pow(0.5)
            updated_v2 = ab_pos.div(ab_norm)
            self.memory_v2.index_copy_(0, y, updated_v2)

        return out_v1, out_v2


N, D, K = 40, 8, 6
LABELS = torch.arange(N) % 4


def _memory(**kw):
    return ContrastMemory(D, N, K, 0.07, 0.5, seed=0, labels=LABELS, **kw)


def _embeddings(seed, b=5):
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(b, D, generator=g), dim=1) for _ in range(2)]


def test_memory_matches_repdistiller_over_two_steps():
    ours = _memory()
    ref = _RefContrastMemory(ours.memory_s, ours.memory_t, K)
    for step in range(2):
        v_s, v_t = _embeddings(step)
        index = torch.tensor([3, 7, 12, 25, 31]) + step
        idx = ours.sample(index)
        out_s, out_t = ours(v_s, v_t, index, idx)
        ref_s, ref_t = ref(v_s, v_t, index, idx)
        assert torch.allclose(out_s, ref_s.squeeze(2), rtol=1e-6) and torch.allclose(out_t, ref_t.squeeze(2), rtol=1e-6)
        assert torch.allclose(ours.z, ref.params[2:4])
        assert torch.allclose(ours.memory_s, ref.memory_v1, atol=1e-7)
        assert torch.allclose(ours.memory_t, ref.memory_v2, atol=1e-7)


def test_memory_update_rule_and_z_by_hand():
    mem = _memory()
    m_s, m_t = mem.memory_s.clone(), mem.memory_t.clone()
    stdv = 1 / math.sqrt(D / 3)
    assert m_s.abs().max() <= stdv and (mem.z == -1).all()
    v_s, v_t = _embeddings(1, b=2)
    index = torch.tensor([4, 9])
    idx = torch.tensor([[4, 1, 2, 3, 5, 6, 7], [9, 0, 2, 3, 4, 5, 6]])
    out_s, out_t = mem(v_s, v_t, index, idx)
    # scores from the memory before the update: the student against the teacher memory, and vice versa
    raw_s = torch.exp(torch.stack([m_t[idx[b]] @ v_s[b] for b in range(2)]) / 0.07)
    raw_t = torch.exp(torch.stack([m_s[idx[b]] @ v_t[b] for b in range(2)]) / 0.07)
    z = torch.stack([raw_s.mean() * N, raw_t.mean() * N])
    assert torch.allclose(mem.z, z) and torch.allclose(out_s, raw_s / z[0]) and torch.allclose(out_t, raw_t / z[1])
    # rows 4 and 9: momentum 0.5 mix with the embedding, then unit length; every other row untouched
    for memory, old, v in ((mem.memory_s, m_s, v_s), (mem.memory_t, m_t, v_t)):
        mix = 0.5 * old[index] + 0.5 * v
        assert torch.allclose(memory[index], mix / mix.norm(dim=1, keepdim=True))
        assert torch.allclose(memory[index].norm(dim=1), torch.ones(2))
        rest = torch.ones(N, dtype=torch.bool)
        rest[index] = False
        assert torch.equal(memory[rest], old[rest])
    # Z is set once
    z_first = mem.z.clone()
    mem(*_embeddings(2, b=2), index, idx)
    assert torch.equal(mem.z, z_first)


def test_negatives_other_class_without_replacement_and_uniform():
    mem = _memory()
    index = torch.arange(8)
    idx = mem.sample(index)
    assert idx.shape == (8, 1 + K) and torch.equal(idx[:, 0], index)
    assert (LABELS[idx[:, 1:]] != LABELS[index][:, None]).all()
    assert all(len(set(row.tolist())) == K for row in idx[:, 1:])
    big = ContrastMemory(D, N, 50, 0.07, 0.5, seed=0, labels=LABELS)  # 30 samples of other classes < 50
    neg = big.sample(index)[:, 1:]
    assert (LABELS[neg] != LABELS[index][:, None]).all()
    uni = ContrastMemory(D, N, 500, 0.07, 0.5, seed=0, labels=None, negatives="uniform").sample(index)[:, 1:]
    assert set(uni.flatten().tolist()) == set(range(N))  # every index, the positive's class included
    with pytest.raises(ValueError, match="labeled training split"):
        ContrastMemory(D, N, K, 0.07, 0.5, seed=0, labels=None)
    # the same seed draws the same memory and negatives
    assert torch.equal(_memory().sample(index), _memory().sample(index))


def _crd(digits, **params):
    torch.manual_seed(0)
    teacher = models.build(ModelSpec(name="cnn", params={"channels": [8, 16], "hidden": 24}), digits.spec)
    student = models.build(ModelSpec(name="mlp", params={"hidden": [32], "dropout": 0.2}), digits.spec)
    params = {"student_layer": "4:input", "teacher_layer": "head.3:input", "feat_dim": 16, "nce_k": 64, **params}
    return build_method(MethodSpec(name="crd", params=params), student, LiveTeacher(teacher),
                        Setup.for_data(digits.spec, digits.train))


def test_method_terms_and_state(digits):
    method = _crd(digits)
    assert method.memory.memory_s.shape == (len(digits.train), 16)
    assert method.embed_s.linear.in_features == 32 and method.embed_t.linear.in_features == 24
    keys = set(method.trainable().state_dict())
    assert {"memory.memory_s", "memory.memory_t", "memory.z", "embed_t.linear.weight"} <= keys
    assert not any(k.startswith("teacher") for k in keys)
    batch = digits.train.batch(torch.arange(10, 42))
    before = method.memory.memory_s.clone()
    logits, terms = method.loss_terms(batch, None)
    assert set(terms) == {"ce", "crd"} and logits.shape == (32, 10)
    assert (method.memory.z > 0).all() and not torch.equal(before[10:42], method.memory.memory_s[10:42])
    assert torch.equal(before[42:], method.memory.memory_s[42:])
    sum(terms.values()).backward()
    assert method.embed_s.linear.weight.grad is not None and method.embed_t.linear.weight.grad is not None
    # by hand, from an identical method (same seeds): embed, sample, score against the other side's memory, Z
    twin = _crd(digits)
    feats = {}
    twin.student[4].register_forward_pre_hook(lambda m, i: feats.setdefault("s", i[0]))
    twin.teacher.model.head[3].register_forward_pre_hook(lambda m, i: feats.setdefault("t", i[0]))
    twin.student(batch.x)
    twin.teacher(batch.x)
    v_s, v_t = F.normalize(twin.embed_s.linear(feats["s"]), dim=1), F.normalize(twin.embed_t.linear(feats["t"]), dim=1)
    idx = twin.memory.sample(batch.index)
    raw_s = torch.exp(torch.einsum("bkd,bd->bk", twin.memory.memory_t[idx], v_s) / 0.07)
    raw_t = torch.exp(torch.einsum("bkd,bd->bk", twin.memory.memory_s[idx], v_t) / 0.07)
    n = len(digits.train)
    expected = 0.8 * (crd_nce_loss(raw_s / (raw_s.mean() * n), n) + crd_nce_loss(raw_t / (raw_t.mean() * n), n))
    assert torch.allclose(terms["crd"], expected, rtol=1e-4)
    with pytest.raises(ValueError, match="'train' split only"):
        method.loss_terms(digits.val.batch(torch.arange(4), split="val"), None)


def test_bad_config(digits):
    with pytest.raises(ConfigError, match=r"method\.params\.teacher_layer: no module"):
        _crd(digits, teacher_layer="fc:input")
    unlabeled = Setup(digits.spec, Setup.for_data(digits.spec, digits.train).example, train_size=len(digits.train))
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match=r"method\.params\.negatives: .*use negatives: uniform"):
        build_method(MethodSpec(name="crd", params={"student_layer": "4:input", "teacher_layer": "4:input"}),
                     models.build(ModelSpec(name="mlp", params={"hidden": [32]}), digits.spec),
                     LiveTeacher(models.build(ModelSpec(name="mlp", params={"hidden": [32]}), digits.spec)),
                     unlabeled)


def _trainer(digits, run_dir, callbacks=()):
    seed_everything(0)
    method = _crd(digits)
    recipe = Recipe(seed=0, optim=OptimSettings(name="sgd", lr=0.05),
                    train=LoopSettings(epochs=3, progress=False, tensorboard=False))
    return Trainer(method, Batches(digits, 128), recipe, run_dir, callbacks=callbacks)


def test_stopped_after_the_first_epoch_and_resumed_ends_bit_identical(digits, tmp_path):
    full = _trainer(digits, tmp_path / "full")
    full_result = full.fit()
    cut = _trainer(digits, tmp_path / "cut", callbacks=(stop_after(0),))
    with pytest.raises(Stop):
        cut.fit()
    state = load_checkpoint(latest_checkpoint(tmp_path / "cut" / "checkpoints")).state
    assert "negatives_rng" in state["method"]
    resumed = _trainer(digits, tmp_path / "cut")
    result = resumed.fit(resume=True)
    assert result.resumed_from == 0
    a, b = full.method.trainable().state_dict(), resumed.method.trainable().state_dict()
    assert a.keys() == b.keys() and "memory.memory_s" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(full.method.memory.generator.get_state(), resumed.method.memory.generator.get_state())
    assert result.test == full_result.test and result.history[-1] == full_result.history[-1]
    assert result.history[-1]["crd"] < full_result.history[0]["crd"]
