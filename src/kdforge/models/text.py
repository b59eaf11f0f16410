"""Models of token-id sequences (`tokens` data): called as model(ids) with ids int64 [B, L], padded with PAD_ID."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field, PositiveInt
from torch import Tensor, nn

from kdforge.data.types import PAD_ID, DataSpec
from kdforge.models.mlp import Dropout, mlp_head
from kdforge.registry import MODELS


def vocab_size(spec: DataSpec) -> int:
    if spec.kind != "tokens" or spec.vocab_size is None:
        raise ValueError(f"needs token-id data with a vocabulary, got {spec.kind!r} data")
    return spec.vocab_size


class TextCNN(nn.Module):
    """Kim, EMNLP 2014 (CNN-rand): embeddings, one conv per filter width, ReLU, max over time, dropout, linear."""

    def __init__(self, vocab: int, classes: int, embed: int, widths: Sequence[int], maps: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, padding_idx=PAD_ID)
        self.convs = nn.ModuleList(nn.Conv1d(embed, maps, w) for w in widths)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(maps * len(widths), classes)

    def forward(self, ids: Tensor) -> Tensor:
        x = self.embed(ids).transpose(1, 2)  # [B, E, L]
        pooled = [conv(x).relu().amax(dim=2) for conv in self.convs]
        return self.fc(self.dropout(torch.cat(pooled, dim=1)))


class BagOfEmbeddings(nn.Module):
    """The mean of a sentence's word embeddings (padding excluded), then an MLP head."""

    def __init__(self, vocab: int, classes: int, embed: int, hidden: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, padding_idx=PAD_ID)
        self.head = mlp_head(embed, hidden, classes, dropout)

    def forward(self, ids: Tensor) -> Tensor:
        mask = (ids != PAD_ID).unsqueeze(-1).float()
        mean = (self.embed(ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return self.head(mean)


@MODELS.register("textcnn")
def textcnn(spec: DataSpec, embed: PositiveInt = 128,
            widths: Annotated[Sequence[PositiveInt], Field(min_length=1)] = (3, 4, 5), maps: PositiveInt = 100,
            dropout: Dropout = 0.5) -> nn.Module:
    vocab = vocab_size(spec)
    if spec.input_shape[0] < max(widths):
        raise ValueError(f"sequences of {spec.input_shape[0]} tokens are shorter than the widest filter {max(widths)}")
    return TextCNN(vocab, spec.num_classes, embed, widths, maps, dropout)


@MODELS.register("bow")
def bow(spec: DataSpec, embed: PositiveInt = 64, hidden: Sequence[PositiveInt] = (64,),
        dropout: Dropout = 0.0) -> nn.Module:
    return BagOfEmbeddings(vocab_size(spec), spec.num_classes, embed, hidden, dropout)
