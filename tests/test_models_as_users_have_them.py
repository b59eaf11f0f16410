"""Models and batches as users have them, end to end through `kdforge.distill` and a config (issue 24): Hugging Face
classifiers returning `SequenceClassifierOutput`, Datasets of dicts, two-input models, outputs under another key,
a live and a cached teacher, the `hf_bert` registry model, and the worked example on a sliver of SST-2."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

import kdforge
from kdforge.api import load_config, run
from kdforge.config.schema import OptimConfig, TeacherCacheConfig
from kdforge.data.types import PAD_ID

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
needs_hf = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                              reason="transformers (the [hf] extra: pip install 'kdforge[hf]') is not installed")
needs_sst2 = pytest.mark.skipif(not SST2.is_dir(), reason=f"{SST2} (the shipped SST-2) is not present")
FAST = dict(epochs=1, batch_size=8, eval_every=1, tensorboard=False, teacher_metrics=False,
            optim=OptimConfig(name="adam", lr=1e-3))


def tiny_bert(hidden: int, layers: int, classes: int = 3, seed: int = 0) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(
        vocab_size=40, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=16, num_labels=classes, pad_token_id=PAD_ID))


class Sentences(Dataset):
    """What a tokenizer hands over: a dict of tensors per sentence, the label under `labels`."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, 40, (n, 10), generator=g)
        self.ids[: n // 2, 7:] = PAD_ID
        self.y = (self.ids[:, 0] % 3).long()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": (self.ids[i] != PAD_ID).long(), "labels": self.y[i]}


def _weights(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@needs_hf
@pytest.mark.parametrize("cached", [False, True], ids=["live", "cached"])
def test_hugging_face_teacher_and_student_on_a_dataset_of_dicts(tmp_path, monkeypatch, cached):
    """Before: `KeyError: 0` on the Dataset, then a TypeError on SequenceClassifierOutput inside the KD term."""
    monkeypatch.setenv("KDFORGE_CACHE", str(tmp_path / "cache"))
    teacher, student = tiny_bert(16, 2), tiny_bert(8, 1, seed=1)
    before, teacher_before = _weights(student), _weights(teacher)
    result = kdforge.distill(student, teacher, Sentences(24), Sentences(8, seed=1), method="kd", run_dir=tmp_path / "r",
                             teacher_cache=TeacherCacheConfig() if cached else None, **FAST)
    assert 0.0 <= result.val["top1"] <= 1.0
    assert not torch.equal(before, _weights(student)) and torch.equal(teacher_before, _weights(teacher))


@needs_hf
def test_a_feature_method_taps_hugging_face_module_paths(tmp_path):
    kdforge.distill(tiny_bert(8, 1, seed=1), tiny_bert(16, 2), Sentences(16), method="rkd", run_dir=tmp_path,
                             params={"student_layer": "bert.encoder.layer.0", "teacher_layer": "bert.encoder.layer.1"},
                             **FAST)
    assert (tmp_path / "metrics.jsonl").read_text().count('"rkd"') >= 1


class TwoInputs(nn.Module):
    """A model of (x, mask) that returns its logits in a dict under `scores`."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(4, classes)

    def forward(self, x: Tensor, mask: Tensor) -> dict[str, Tensor]:
        return {"scores": self.fc(x * mask)}


def _pairs(n: int) -> list[tuple[tuple[Tensor, Tensor], int]]:
    g = torch.Generator().manual_seed(0)
    x, mask = torch.randn(n, 4, generator=g), (torch.rand(n, 4, generator=g) > 0.3).float()
    return [((x[i], mask[i]), i % 3) for i in range(n)]


class Listed(Dataset):
    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def test_a_two_input_model_with_its_logits_under_another_key(tmp_path):
    """Before: a raw ValueError converting ((x, mask), y) samples."""
    torch.manual_seed(0)
    teacher, student = TwoInputs(), TwoInputs()
    before = _weights(student)
    kdforge.distill(student, teacher, Listed(_pairs(12)), method="kd", output_key="scores", run_dir=tmp_path, **FAST)
    assert not torch.equal(before, _weights(student))


@needs_hf
def test_distill_tells_a_model_that_refuses_the_inputs_in_one_line(tmp_path):
    class IdsOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(10, 3)

        def forward(self, ids: Tensor) -> Tensor:
            return self.fc(ids.float())

    with pytest.raises(kdforge.errors.ConfigError) as info:
        kdforge.distill(IdsOnly(), tiny_bert(8, 1), Sentences(4), run_dir=tmp_path / "r", **FAST)
    message = str(info.value)
    assert "\n" not in message and message.startswith("student (IdsOnly) refused a batch of 2 training samples")
    assert "input_ids [2, 10], attention_mask [2, 10]): TypeError" in message
    assert not (tmp_path / "r").exists()


@needs_hf
def test_the_hf_bert_registry_model_masks_padding_and_saves(tmp_path):
    from kdforge.data import DataSpec
    from kdforge.models import ModelSpec, build, load_model, save_model

    spec = DataSpec("toy", (10,), 3, kind="tokens", vocab_size=40)
    model_spec = ModelSpec("hf_bert", {"hidden": 8, "layers": 1, "heads": 2, "dropout": 0.0})
    model = build(model_spec, spec).eval()
    ids = Sentences(4).ids
    padded = model(ids).logits
    assert torch.allclose(padded, model(input_ids=ids, attention_mask=(ids != PAD_ID).long()).logits)
    assert not torch.allclose(padded[:2], model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:2])
    save_model(tmp_path / "m", model, model_spec, spec)
    assert torch.equal(load_model(tmp_path / "m").eval()(ids).logits, padded)
    with pytest.raises(kdforge.errors.ConfigError, match="hidden=9 is not a multiple of heads=2"):
        build(ModelSpec("hf_bert", {"hidden": 9}), spec)


@needs_hf
@needs_sst2
@pytest.mark.slow
def test_the_worked_example_runs_on_a_sliver(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    sys.modules.pop("hf_bert_sst2", None)
    example = __import__("hf_bert_sst2")
    out = example.main(["--train-size", "40", "--test-size", "16", "--epochs", "1", "--max-len", "24",
                        "--run-dir", str(tmp_path), "--data-root", str(SST2.parent)])
    assert 0.0 <= out["student_val_top1"] <= 1.0 and 0.0 <= out["teacher_val_top1"] <= 1.0
    assert (tmp_path / "student" / "metrics.jsonl").exists()


@needs_hf
@needs_sst2
@pytest.mark.slow
def test_the_hf_config_runs_on_a_sliver_and_saves_its_student(tmp_path):
    cfg = load_config(ROOT / "configs" / "sst2_hf_bert_rkd.yaml", [
        "train.epochs=1", "teacher.recipe.train.epochs=1", "data.train_subset=40", "data.test_subset=16",
        "data.params.max_len=24", "train.progress=false", "teacher.recipe.train.progress=false",
        f"data.root={SST2.parent}", f"output_dir={tmp_path / 'run'}", f"teacher.store_dir={tmp_path / 'teachers'}"])
    summary = run(cfg)
    assert 0.0 <= summary["test"]["top1"] <= 1.0
    assert (tmp_path / "run" / "student" / "model.safetensors").exists()


def test_a_config_run_checks_the_teacher_it_is_given_against_the_student(tmp_path):
    """The assembly point probes the models of a config run too: a teacher handed to `assemble` (a comparison's,
    a search's) with other classes than the student is one line naming the key, before any method is built."""
    from kdforge.api import assemble

    cfg = load_config(ROOT / "configs" / "gaussian_kd.yaml", ["train.progress=false", f"output_dir={tmp_path / 'r'}",
                                                                "data.params.num_classes=4", "data.params.dim=16"])
    with pytest.raises(kdforge.errors.ConfigError) as info:
        assemble(cfg, teacher=nn.Linear(16, 7))
    assert str(info.value).startswith("teacher.model (Linear) gives 7 classes per sample and student (MLP) 4")
    with pytest.raises(kdforge.errors.ConfigError, match=r"^teacher.model \(Linear\) refused a batch of 2 training "
                                                          r"samples \(x \[2, 16\]\): RuntimeError"):
        assemble(cfg, teacher=nn.Linear(15, 4))
    assert not (tmp_path / "r").exists()
