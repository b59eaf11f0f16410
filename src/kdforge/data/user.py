"""Data as users hand it over, held as a `Split`: tensors, (inputs, labels) pairs, dicts of tensors and map-style
Datasets of samples, with one input, several positional inputs `((x, mask), y)` or named ones (`input_ids`,
`attention_mask`, `labels`: a Hugging Face-style dict, whose tensors are passed to the model by keyword).

Labels must be class indices. One-hot rows are exactly class indices written another way and are turned into them;
soft labels (rows of probabilities that are not one-hot) are refused in one line: the CE term of every method fits
class indices (or the mixed targets mixup/cutmix makes), and the soft targets of distillation are the teacher's.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from kdforge.data.types import Calling, Split, all_finite
from kdforge.errors import ConfigError

KINDS_ACCEPTED = ("a Split, an (x, y) pair of tensors (x may be a tuple or a dict of tensors), a dict of tensors "
                  "with the labels under its label key, or a Dataset of (x, y) or dict samples")


def to_split(source: Any, label_key: str = "labels", output_key: str = "logits", what: str = "distill()") -> Split:
    """`source` held in memory as a Split (see the module docstring); ConfigError in one line naming `what` on data
    that cannot be used (labels missing or not class indices, lengths that differ, NaN or infinite inputs)."""
    if isinstance(source, Split):
        return source
    if isinstance(source, tuple) and len(source) == 2:
        inputs, y = source
    elif isinstance(source, Mapping):
        inputs, y = _without_labels(source, label_key, what)
    elif isinstance(source, Dataset) or (_indexable(source) and not isinstance(source, (list, str, Tensor, tuple))):
        inputs, y = _stacked([source[i] for i in range(len(source))], label_key, what)
    else:
        raise ConfigError(f"data must be {KINDS_ACCEPTED}, not {type(source).__name__}")
    return _split(inputs, y, output_key, what)


def class_indices(y: Any, what: str = "distill()") -> Tensor:
    """`y` as int64 class indices [N]: integer labels, integral floats, or one-hot rows [N, C]; soft labels and
    negative labels are refused in one line."""
    y = torch.as_tensor(y)
    if y.dim() == 2 and y.shape[1] > 1:
        hot = ((y == 0) | (y == 1)).all() and bool((y.sum(1) == 1).all())
        if not hot:
            raise ConfigError(f"labels given to {what} are soft (rows of {y.shape[1]} probabilities), not class "
                              "indices: the CE term fits class indices (the teacher gives the soft targets); "
                              "pass y.argmax(1)")
        y = y.argmax(1)
    if y.dim() != 1:
        raise ConfigError(f"labels given to {what} have shape {tuple(y.shape)}; give one class index per sample")
    if y.is_floating_point() and not bool((y == y.round()).all()):
        raise ConfigError(f"labels given to {what} are not whole numbers (e.g. {_first(y[y != y.round()])}); give "
                          "class indices 0..C-1")
    if y.numel() and int(y.min()) < 0:
        raise ConfigError(f"labels given to {what} hold {int(y.min())}; class indices run from 0 to C-1")
    return y.long()


def _indexable(source: Any) -> bool:
    return hasattr(source, "__len__") and hasattr(source, "__getitem__")


def _first(t: Tensor) -> float:
    return float(t.flatten()[0])


def _without_labels(columns: Mapping[str, Any], label_key: str, what: str) -> tuple[dict[str, Any], Any]:
    if label_key not in columns:
        raise ConfigError(f"the dict samples given to {what} have no labels under {label_key!r} (keys: "
                          f"{', '.join(map(str, columns))}); name the label key")
    return {k: v for k, v in columns.items() if k != label_key}, columns[label_key]


def _stacked(items: Sequence[Any], label_key: str, what: str) -> tuple[Any, Tensor]:
    """A Dataset's samples as columns: each input and the labels stacked over the samples."""
    if not items:
        raise ConfigError(f"the Dataset given to {what} is empty; give at least one sample")
    first = items[0]
    if isinstance(first, Mapping):
        rows = [_without_labels(item, label_key, what) for item in items]
        names = list(rows[0][0])
        inputs: Any = {k: _stack([r[0][k] for r in rows], repr(k), what) for k in names}
        return inputs, _stack([r[1] for r in rows], "labels", what)
    if not isinstance(first, (tuple, list)) or len(first) != 2:
        raise ConfigError(f"data must be {KINDS_ACCEPTED}; sample 0 of this Dataset is a {type(first).__name__}")
    labels = _stack([item[1] for item in items], "labels", what)
    if isinstance(first[0], (tuple, list)):
        return tuple(_stack([item[0][i] for item in items], f"input {i}", what) for i in range(len(first[0]))), labels
    if isinstance(first[0], Mapping):
        return {k: _stack([item[0][k] for item in items], repr(k), what) for k in first[0]}, labels
    return _stack([item[0] for item in items], "input", what), labels


def _stack(values: list[Any], name: str, what: str) -> Tensor:
    tensors = [torch.as_tensor(v) for v in values]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        some = ", ".join(map(str, sorted(shapes)[:3]))
        raise ConfigError(f"the samples given to {what} differ in the shape of {name} ({some}); pad them to one shape")
    return torch.stack(tensors)


def _split(inputs: Any, y: Any, output_key: str, what: str) -> Split:
    """The Split of `inputs` (a tensor, a tuple of positional inputs, or a dict of named ones) and labels `y`."""
    if isinstance(inputs, Mapping):
        if not inputs:
            raise ConfigError(f"the dict samples given to {what} hold no input besides the labels")
        named = {str(k): _tensor(v, str(k), what) for k, v in inputs.items()}
        x_name = next(iter(named))
        x, more, calling = named.pop(x_name), (), Calling(x_name=x_name, output_key=output_key)
    elif isinstance(inputs, (tuple, list)):
        if not inputs:
            raise ConfigError(f"the inputs given to {what} are an empty tuple")
        x, *rest = inputs
        more = tuple(_tensor(t, f"input {i + 1}", what) for i, t in enumerate(rest))
        x, named = _first_input(x, what), {}
        calling = Calling(output_key=output_key)
    else:
        x, more, named, calling = _first_input(inputs, what), (), {}, Calling(output_key=output_key)
    y = class_indices(y, what)
    lengths = {len(t) for t in (x, *more, *named.values())}
    if len(lengths | {len(y)}) > 1 or len(x) == 0:
        raise ConfigError(f"data given to {what} has {len(x)} inputs and {len(y)} labels"
                          f"{' (its inputs differ in length)' if len(lengths) > 1 else ''}; give one label per input, "
                          "and at least one")
    return Split(x=x, y=y, more=more, named=named, calling=calling)


def _first_input(x: Any, what: str) -> Tensor:
    """The first positional input as before: int64 token ids kept, anything else as float32."""
    x = torch.as_tensor(x)
    return x if x.dtype == torch.long else _tensor(x.float(), "input", what)


def _tensor(value: Any, name: str, what: str) -> Tensor:
    """One input as a tensor: floats as float32 (checked finite), integers as int64 (ids, masks), bools kept."""
    t = torch.as_tensor(value)
    if t.is_floating_point():
        t = t.float()
        if not all_finite(t):
            raise ConfigError(f"data given to {what} holds NaN or infinite input values; clean them first ({name})")
    elif t.dtype != torch.bool:
        t = t.long()
    return t
