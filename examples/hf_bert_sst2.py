"""Distill a Hugging Face BERT classifier into a smaller one on SST-2, with the models and batches as Hugging Face
users have them: `BertForSequenceClassification` built from a `BertConfig` (random weights, nothing downloaded),
returning a `SequenceClassifierOutput`, and a Dataset of dicts (`input_ids`, `attention_mask`, `labels`) whose
tensors kdforge passes to the models by keyword. No wrapper: kdforge reads the output's `.logits`.

The teacher (4 layers, 64 wide) is first trained alone (method `ce`), then a 2-layer, 32-wide student is distilled
from it with relational KD (RKD, Park et al. 2019) on the hidden states of both models' last encoder layers
(`bert.encoder.layer.<i>`: module paths of the transformers model itself) plus KD on the logits, and the
student's dev accuracy is printed next to the teacher's. `configs/sst2_hf_bert_rkd.yaml` runs the same from a
config, through the `hf_bert` model of the registry. Needs the [hf] extra and ../shared/data/sst2 (the project's
word tokenizer and vocabulary: ids from `kdforge.data`).

    PYTHONPATH=src python examples/hf_bert_sst2.py [--train-size 2000] [--epochs 3] [--run-dir runs/hf_bert_sst2]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

import kdforge
from kdforge.api import build_data
from kdforge.config.schema import DataConfig, OptimConfig
from kdforge.data import Split
from kdforge.data.types import PAD_ID


def tiny_bert(vocab: int, max_len: int, hidden: int, layers: int, classes: int, seed: int) -> nn.Module:
    """A BertForSequenceClassification with random weights from a small BertConfig."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=4 * hidden, max_position_embeddings=max_len, num_labels=classes,
                        pad_token_id=PAD_ID)
    return BertForSequenceClassification(config)


class Sentences(Dataset):
    """SST-2 sentences as a tokenizer would hand them over: one dict of tensors per sentence."""

    def __init__(self, split: Split) -> None:
        self.ids, self.labels = split.x, split.y

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": (ids != PAD_ID).long(), "labels": self.labels[i]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=None, help="training sentences (default: all 6,920)")
    parser.add_argument("--test-size", type=int, default=None, help="dev sentences evaluated (default: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=56)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/hf_bert_sst2"))
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args(argv)

    data = build_data(DataConfig(name="sst2", root=args.data_root, train_subset=args.train_size,
                                 test_subset=args.test_size, params={"max_len": args.max_len}))
    vocab, classes = data.spec.vocab_size, data.spec.num_classes
    train, val = Sentences(data.train), Sentences(data.val)
    common: dict[str, Any] = dict(epochs=args.epochs, batch_size=32, eval_every=1, tensorboard=False, overwrite=True,
                                  optim=OptimConfig(name="adamw", lr=5e-4, weight_decay=0.01))

    teacher = tiny_bert(vocab, args.max_len, hidden=64, layers=4, classes=classes, seed=0)
    taught = kdforge.distill(teacher, None, train, val, method="ce", run_dir=args.run_dir / "teacher", **common)
    student = tiny_bert(vocab, args.max_len, hidden=32, layers=2, classes=classes, seed=1)
    result = kdforge.distill(student, teacher, train, val, method="rkd", run_dir=args.run_dir / "student",
                             params={"student_layer": "bert.encoder.layer.1", "teacher_layer": "bert.encoder.layer.3",
                                     "kd_weight": 1.0}, **common)
    out = {"teacher_val_top1": taught.val["top1"], "student_val_top1": result.val["top1"]}
    print(f"dev top-1: teacher {out['teacher_val_top1']:.2%}, student {out['student_val_top1']:.2%}")
    return out


if __name__ == "__main__":
    main()
