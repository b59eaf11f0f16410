"""Bad inputs to the Python API, as a user bringing their own models and data makes them (issue 24): each case is a
ConfigError in one line naming what is wrong, raised at set-up before anything is written (the run folder is not
created). The CLI's corpus is test_corpus.py."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

import kdforge
from kdforge.config.schema import AugmentConfig
from kdforge.errors import ConfigError

FAST: dict[str, Any] = dict(epochs=1, batch_size=4, tensorboard=False, teacher_metrics=False)
X, Y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def linear(classes: int = 3, inputs: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(inputs, classes)


class Returns(nn.Module):
    """A model whose output is `make(logits)`: a dict under another key, token-level logits, ..."""

    def __init__(self, make: Callable[[Tensor], Any]) -> None:
        super().__init__()
        self.fc, self.make = nn.Linear(4, 3), make

    def forward(self, x: Tensor) -> Any:
        return self.make(self.fc(x))


class Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.fc(x * mask)


class Samples(Dataset):
    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        return self.items[i]


def _dicts(label_key: str = "labels", ragged: bool = False) -> Samples:
    return Samples([{"input_ids": torch.ones(5 + (ragged and i == 1), dtype=torch.long), label_key: i % 2}
                    for i in range(4)])


def _soft() -> Tensor:
    return torch.softmax(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), 1)


# (case id, keyword arguments of distill (student, teacher, train, ...), text the one line must contain)
CASES: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    ("teacher-student-classes", lambda: dict(student=linear(5), teacher=linear(7), train=(X, Y)),
     "teacher (Linear) gives 7 classes per sample and student (Linear) 5"),
    ("labels-beyond-the-model", lambda: dict(student=linear(2), teacher=linear(2), train=(X, Y)),
     "the labels run to class 2 but student (Linear) gives 2 classes"),
    ("num-classes-below-labels", lambda: dict(student=linear(), teacher=linear(), train=(X, Y), num_classes=2),
     "num_classes=2, but the labels run to class 2"),
    ("num-classes-not-the-models", lambda: dict(student=linear(), teacher=linear(), train=(X, Y), num_classes=4),
     "num_classes=4, but the models give 3 classes"),
    ("soft-labels", lambda: dict(student=linear(), teacher=linear(), train=(X, _soft())),
     "are soft (rows of 3 probabilities), not class indices"),
    ("fractional-labels", lambda: dict(student=linear(), teacher=linear(), train=(X, Y * 0.5)),
     "are not whole numbers (e.g. 0.5)"),
    ("negative-labels", lambda: dict(student=linear(), teacher=linear(), train=(X, Y - 1)),
     "hold -1; class indices run from 0 to C-1"),
    ("inputs-the-student-refuses", lambda: dict(student=linear(inputs=5), teacher=linear(), train=(X, Y)),
     "student (Linear) refused a batch of 2 training samples (x [2, 4]): RuntimeError"),
    ("inputs-the-teacher-refuses", lambda: dict(student=linear(), teacher=linear(inputs=6), train=(X, Y)),
     "teacher (Linear) refused a batch of 2 training samples (x [2, 4]): RuntimeError"),
    ("two-inputs-to-a-one-input-model", lambda: dict(student=linear(), teacher=linear(), train=((X, X), Y)),
     "refused a batch of 2 training samples (x [2, 4], input 1 [2, 4]): TypeError"),
    ("dict-samples-to-a-positional-model", lambda: dict(student=linear(inputs=5), teacher=None, method="ce",
                                                        train=_dicts()),
     "student (Linear) refused a batch of 2 training samples (input_ids [2, 5]): TypeError"),
    ("dict-samples-without-labels", lambda: dict(student=linear(), teacher=linear(), train=_dicts("label")),
     "have no labels under 'labels' (keys: input_ids, label); name the label key"),
    ("unpadded-dict-samples", lambda: dict(student=linear(), teacher=linear(), train=_dicts(ragged=True)),
     "differ in the shape of 'input_ids'"),
    ("logits-under-another-key", lambda: dict(student=Returns(lambda t: {"scores": t}), teacher=linear(),
                                              train=(X, Y)),
     "student (Returns): the model returned a dict without 'logits' (it has scores); name the logits' key"),
    ("output-without-logits", lambda: dict(student=linear(), teacher=Returns(lambda t: object()), train=(X, Y)),
     "teacher (Returns): the model returned a object, not logits"),
    ("augmenting-multi-input-data", lambda: dict(student=Masked(), teacher=Masked(), train=((X, X), Y),
                                                 augment=AugmentConfig(mixup_alpha=0.2)),
     "multi-input data cannot be augmented, so leave data.augment.mixup_alpha off"),
    ("token-level-logits", lambda: dict(student=Returns(lambda t: t.unsqueeze(1).expand(-1, 5, -1)), teacher=None,
                                        method="ce", train=(X, Y)),
     "returned logits of shape [2, 5, 3] for 2 samples"),
]


@pytest.mark.parametrize("case,make,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_api_input(tmp_path: Path, case: str, make: Callable[[], dict[str, Any]], needle: str):
    kwargs = {"method": "kd", **make()}
    with pytest.raises(ConfigError) as info:
        kdforge.distill(run_dir=tmp_path / "run", **FAST, **kwargs)
    message = str(info.value)
    assert "\n" not in message and needle in message, message
    assert not (tmp_path / "run").exists(), "nothing is written before the set-up checks"


def test_the_api_corpus_covers_the_issue():
    assert len(CASES) >= 17
