"""Hugging Face `transformers` classifiers built from a config (random weights, nothing downloaded), for `tokens`
data: the `[hf]` extra. Their module paths are the library's own (`bert.encoder.layer.0`), so feature methods tap
them by name, and they return a `SequenceClassifierOutput`, whose logits `data.types.logits_of` reads."""
from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import PositiveInt
from torch import Tensor, nn

from kdforge.data.types import PAD_ID, DataSpec
from kdforge.errors import require_extra
from kdforge.models.mlp import Dropout
from kdforge.models.text import vocab_size
from kdforge.registry import MODELS


@cache
def _padded_bert() -> type[nn.Module]:
    """BertForSequenceClassification that masks padding itself: token data hands the model its ids alone."""
    transformers = require_extra("transformers", "hf", "the hf_bert model")

    class PaddedBert(transformers.BertForSequenceClassification):  # type: ignore[misc, name-defined]
        def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None, **kwargs: Any) -> Any:
            if attention_mask is None and input_ids is not None:  # PAD_ID tokens are not attended to
                attention_mask = (input_ids != PAD_ID).long()
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    return PaddedBert


@MODELS.register("hf_bert")
def hf_bert(spec: DataSpec, hidden: PositiveInt = 128, layers: PositiveInt = 2, heads: PositiveInt = 2,
            intermediate: PositiveInt | None = None, dropout: Dropout = 0.1) -> nn.Module:
    """A BERT classifier (`transformers.BertForSequenceClassification`) from a `BertConfig`: `hidden` wide, `layers`
    encoder layers of `heads` attention heads, feed-forward `intermediate` wide (default 4 x hidden), positions up
    to the data's sequence length, padding masked. Tap `bert.encoder.layer.<i>` (a layer's hidden states [B, L,
    hidden]) or `bert.pooler` ([B, hidden])."""
    vocab = vocab_size(spec)  # token data is checked first: the refusal is the same without the extra
    if hidden % heads:
        raise ValueError(f"hidden={hidden} is not a multiple of heads={heads}")
    transformers = require_extra("transformers", "hf", "the hf_bert model")
    config = transformers.BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate or 4 * hidden, max_position_embeddings=spec.input_shape[0],
        num_labels=spec.num_classes, pad_token_id=PAD_ID, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout)
    return _padded_bert()(config)
