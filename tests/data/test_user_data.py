"""Models and batches as users have them (issue 24): model outputs read once by `logits_of`, data as pairs, dicts,
tuples of inputs and Datasets of them held as Splits, labels as class indices, and the contract's carriers (take,
batch, to, digest) of the extra inputs. The runs through `distill` are in tests/test_models_as_users_have_them.py."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from kdforge.data.augment import AugmentSettings
from kdforge.data.loader import BatchIterator
from kdforge.data.types import Split, logits_of
from kdforge.data.user import class_indices, to_split
from kdforge.errors import ConfigError
from kdforge.fileio import tensor_digest
from kdforge.methods.l2t_dln import inner_batches

LOGITS = torch.arange(6.0).view(2, 3)


@pytest.mark.parametrize("out", [LOGITS, {"logits": LOGITS, "hidden": torch.zeros(1)}, (LOGITS, torch.zeros(1)),
                                 [LOGITS], SimpleNamespace(logits=LOGITS, loss=None), ({"logits": LOGITS},)],
                         ids=["tensor", "dict", "tuple", "list", "object", "tuple-of-dict"])
def test_logits_of_reads_every_usual_output(out):
    assert logits_of(out) is LOGITS


def test_logits_of_uses_the_key_given_and_names_what_is_there():
    assert logits_of({"scores": LOGITS}, "scores") is LOGITS
    assert logits_of(SimpleNamespace(scores=LOGITS), "scores") is LOGITS
    with pytest.raises(ValueError, match="without 'logits' \\(it has scores\\)"):
        logits_of({"scores": LOGITS})
    with pytest.raises(ValueError, match="returned a str, not logits"):
        logits_of("logits")


def test_logits_of_reads_a_hugging_face_output():
    outputs = pytest.importorskip("transformers.modeling_outputs", reason="transformers (the [hf] extra) absent")
    assert logits_of(outputs.SequenceClassifierOutput(logits=LOGITS)) is LOGITS


class Dicts(Dataset):
    def __init__(self, n: int, label_key: str = "labels") -> None:
        self.ids = torch.randint(2, 50, (n, 6))
        self.ids[:, 4:] = 0
        self.label_key = label_key

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": (self.ids[i] != 0).long(), self.label_key: i % 3}


def test_a_dataset_of_dicts_passes_its_tensors_by_name():
    data = Dicts(5)
    split = to_split(data)
    assert split.calling.x_name == "input_ids" and list(split.named) == ["attention_mask"]
    assert torch.equal(split.x, data.ids) and split.y.tolist() == [0, 1, 2, 0, 1]
    seen = {}

    def model(input_ids, attention_mask):
        seen.update(ids=input_ids, mask=attention_mask)
        return {"logits": torch.zeros(len(input_ids), 3)}

    batch = split.batch(torch.tensor([3, 1]))
    assert batch.forward(model).shape == (2, 3)  # type: ignore[arg-type]
    assert torch.equal(seen["ids"], data.ids[[3, 1]]) and torch.equal(seen["mask"], (data.ids[[3, 1]] != 0).long())


def test_label_key_and_dicts_of_columns():
    split = to_split(Dicts(4, label_key="label"), label_key="label")
    assert split.y.tolist() == [0, 1, 2, 0]
    columns = to_split({"input_ids": torch.ones(3, 2, dtype=torch.long), "labels": torch.tensor([0, 1, 0])})
    assert columns.calling.x_name == "input_ids" and len(columns) == 3
    with pytest.raises(ConfigError, match="no labels under 'labels' \\(keys: input_ids, attention_mask, label\\)"):
        to_split(Dicts(2, label_key="label"))


def test_several_positional_inputs_from_tuples():
    x, mask, y = torch.randn(4, 3), torch.tensor([[1, 1, 0]] * 4), torch.tensor([0, 1, 1, 0])
    for source in [((x, mask), y), [((x[i], mask[i]), y[i]) for i in range(4)]]:
        split = to_split(source if isinstance(source, tuple) else _Listed(source))
        assert torch.equal(split.x, x) and torch.equal(split.more[0], mask) and split.calling.x_name is None
        batch = split.batch(torch.tensor([2]))
        assert torch.equal(batch.forward(lambda a, m: a * m), x[[2]] * mask[[2]])  # type: ignore[arg-type]


class _Listed(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_one_input_data_is_held_as_before_bit_for_bit():
    """The in-memory fast path: a pair or a TensorDataset gives the same Split (float x, int64 ids kept), with no
    extra inputs, and the same digest (teacher logits and caches keyed by it stay valid)."""
    x, y = torch.randint(0, 255, (5, 2, 2), dtype=torch.uint8), torch.tensor([0, 1, 2, 1, 0])
    for source in [(x, y), TensorDataset(x, y)]:
        split = to_split(source)
        assert split.x.dtype == torch.float32 and torch.equal(split.x, x.float()) and split.y.dtype == torch.long
        assert split.more == () and split.named == {} and split.digest() == tensor_digest([split.x])
    ids = to_split((torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 1])))
    assert ids.x.dtype == torch.long


def test_extra_inputs_travel_with_take_batch_to_and_digest():
    split = Split(x=torch.arange(4.0).view(4, 1), y=torch.tensor([0, 1, 0, 1]), more=(torch.arange(4).view(4, 1),),
                  named={"mask": torch.arange(4).view(4, 1) * 10})
    part = split.take(torch.tensor([3, 0]))
    assert part.more[0].flatten().tolist() == [3, 0] and part.named["mask"].flatten().tolist() == [30, 0]
    batch = split.batch(torch.tensor([1, 2])).to("cpu")
    assert batch.extra[0].flatten().tolist() == [1, 2] and batch.named["mask"].flatten().tolist() == [10, 20]
    assert split.digest() != Split(x=split.x, y=split.y).digest()  # other inputs, other key
    halves = inner_batches(batch, 2)  # L2T-DLN's inner steps cut every per-sample input
    assert [h.named["mask"].item() for h in halves] == [10, 20] and [h.extra[0].item() for h in halves] == [1, 2]


def test_multi_input_data_cannot_be_augmented():
    split = to_split(((torch.randn(4, 3), torch.ones(4, 3)), torch.tensor([0, 1, 0, 1])))
    with pytest.raises(ConfigError, match="multi-input data cannot be augmented"):
        BatchIterator(split, 2, 2, AugmentSettings(mixup_alpha=0.2), seed=0)


def test_labels_are_class_indices():
    assert class_indices(torch.tensor([[0, 1, 0], [1, 0, 0]])).tolist() == [1, 0]  # one-hot rows
    assert class_indices(torch.tensor([2.0, 0.0])).tolist() == [2, 0]
    with pytest.raises(ConfigError, match="soft \\(rows of 3 probabilities\\).*pass y.argmax\\(1\\)"):
        class_indices(torch.tensor([[0.2, 0.8, 0.0], [1.0, 0.0, 0.0]]))
    with pytest.raises(ConfigError, match="not whole numbers \\(e.g. 0.5\\)"):
        class_indices(torch.tensor([0.5, 1.0]))
    with pytest.raises(ConfigError, match="hold -1"):
        class_indices(torch.tensor([0, -1]))
    with pytest.raises(ConfigError, match="shape \\(2, 1, 1\\)"):
        class_indices(torch.zeros(2, 1, 1))


def test_bad_samples_are_one_line():
    ragged = _Listed([({"input_ids": torch.ones(3)}, 0), ({"input_ids": torch.ones(4)}, 1)])
    with pytest.raises(ConfigError, match="differ in the shape of 'input_ids'.*pad them"):
        to_split(ragged)
    with pytest.raises(ConfigError, match="2 inputs and 3 labels \\(its inputs differ in length\\)"):
        to_split(((torch.zeros(2, 1), torch.zeros(3, 1)), torch.tensor([0, 1, 0])))
    with pytest.raises(ConfigError, match="NaN or infinite input values; clean them first \\(mask\\)"):
        to_split({"ids": torch.ones(2, 1), "mask": torch.tensor([[float("nan")], [0.0]]),
                  "labels": torch.tensor([0, 1])})
    with pytest.raises(ConfigError, match="sample 0 of this Dataset is a int"):
        to_split(_Listed([1, 2]))
    with pytest.raises(ConfigError, match="no input besides the labels"):
        to_split({"labels": torch.tensor([0, 1])})


def test_model_free_hooks_still_see_a_dict_batch_through_nn_modules():
    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 4)

        def forward(self, input_ids, attention_mask):
            return (self.embed(input_ids) * attention_mask.unsqueeze(-1)).mean(1)

    split = to_split(Dicts(3))
    assert split.batch(torch.arange(3)).forward(Named()).shape == (3, 4)
