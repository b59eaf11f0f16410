"""The data contract shared by every stage: splits held as tensors, the batches drawn from them.

Three kinds of data flow through the same types (`DataSpec.kind`):
  tensor  `Split.x` holds float samples [N, *input_shape] (images, signals, vectors).
  tokens  `Split.x` holds int64 token ids [N, L], padded with `PAD_ID`; `DataSpec.vocab_size` bounds them.
  graph   one graph (`Graph`: node features, edge_index, every node's label) shared by all splits; `Split.x`
          holds the split's node ids. A batch runs the model on the whole graph and `Batch.select` picks the
          batch's nodes from the output, so methods see logits of their samples as with any other kind.

A split may have no labels (`y is None`): the unlabeled part of a label-budget split. Its true labels are kept
in `hidden_y` for analysis (pseudo-label accuracy) and never reach a batch.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor, nn

from kdforge.fileio import tensor_digest

Kind = Literal["tensor", "tokens", "graph"]
KINDS: tuple[str, ...] = ("tensor", "tokens", "graph")
PAD_ID = 0  # token id of padding in every tokens data set; models mask it
UNK_ID = 1  # token id of words outside the training vocabulary


def all_finite(x: Tensor) -> bool:
    """Whether every value of `x` is finite, without a tensor of x's size: min and max are finite exactly when
    nothing is NaN (NaN propagates into both) or infinite (it becomes the min or the max)."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x.detach())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def logits_of(out: Any, key: str = "logits") -> Tensor:
    """The logits in whatever a model returned: a tensor itself, `out[key]` of a dict (a Hugging Face
    `ModelOutput` is one), the first element of a tuple or list, or the attribute `key` of any other object.
    Every model output the library reads (student and teacher, live or recorded) passes here once."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        if key not in out:
            raise ValueError(f"the model returned a {type(out).__name__} without {key!r} (it has "
                             f"{', '.join(map(str, out)) or 'nothing'}); name the logits' key")
        return logits_of(out[key], key)
    if isinstance(out, (tuple, list)) and out:
        return logits_of(out[0], key)
    if isinstance(getattr(out, key, None), Tensor):
        return getattr(out, key)
    raise ValueError(f"the model returned a {type(out).__name__}, not logits: return a tensor, or a dict, tuple or "
                     f"object holding them under {key!r}")


@dataclass(frozen=True)
class Calling:
    """How models are called on a split's samples and read: `x_name` passes `Split.x` as that keyword argument
    instead of as the first positional one (dict samples, every input by name), and `output_key` is where the
    logits are in what the model returns (see `logits_of`). Teacher and student are called the same way."""

    x_name: str | None = None
    output_key: str = "logits"


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about a data set.

    `input_shape` is one sample's shape: (C, H, W) or (L,) for tensors, (L,) token positions for tokens, and
    (F,) node features for a graph. `vocab_size` is set for tokens only; `num_nodes` for graphs only.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    kind: Kind = "tensor"
    vocab_size: int | None = None
    num_nodes: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "input_shape": list(self.input_shape),
                               "num_classes": self.num_classes, "kind": self.kind}
        if self.vocab_size is not None:
            out["vocab_size"] = self.vocab_size
        if self.num_nodes is not None:
            out["num_nodes"] = self.num_nodes
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "DataSpec":
        kind = str(d.get("kind", "tensor"))
        if kind not in KINDS:
            raise ValueError(f"unknown data kind {kind!r}")
        shape = tuple(int(s) for s in d["input_shape"])
        if any(s <= 0 for s in shape) or int(d["num_classes"]) <= 0:
            raise ValueError(f"input_shape {shape} and num_classes {d['num_classes']} must be positive")
        optional = {k: int(d[k]) for k in ("vocab_size", "num_nodes") if d.get(k) is not None}
        return cls(name=str(d["name"]), input_shape=shape, num_classes=int(d["num_classes"]), kind=kind,  # type: ignore[arg-type]
                   **optional)


@dataclass
class Graph:
    """One graph in memory: node features [N, F], edges [2, E] (both directions listed), every node's label [N]."""

    x: Tensor
    edge_index: Tensor
    y: Tensor

    @property
    def num_nodes(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Split:
    """One split in memory.

    `x`: float samples, token ids, or node ids into `graph` (see the module docstring). `y`: int64 labels, or
    None for an unlabeled split, whose true labels (when known) sit in `hidden_y` for analysis only.
    Models with several inputs: `more` holds further positional inputs per sample (`model(x, *more)`: a model
    of `(x, mask)`), `named` keyword inputs per sample (`model(x, **named)`; with `calling.x_name` every input
    is by name: a dict of `input_ids`, `attention_mask`, ...). Each is indexed like `x`.
    """

    x: Tensor
    y: Tensor | None = None
    hidden_y: Tensor | None = None
    graph: Graph | None = None
    more: tuple[Tensor, ...] = ()
    named: dict[str, Tensor] = field(default_factory=dict)
    calling: Calling = Calling()

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def labeled(self) -> bool:
        return self.y is not None

    @property
    def augmentable(self) -> bool:
        """Whether augmentation applies: one float input per sample (not token ids, a graph or several inputs)."""
        return self.graph is None and self.x.is_floating_point() and not self.more and not self.named

    def take(self, index: Tensor) -> "Split":
        """The samples at `index`, copied into new contiguous tensors (the graph is shared, not copied)."""
        pick = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
        return replace(self, x=self.x.index_select(0, index), y=pick(self.y), hidden_y=pick(self.hidden_y),
                       more=tuple(t.index_select(0, index) for t in self.more),
                       named={k: t.index_select(0, index) for k, t in self.named.items()})

    def digest(self) -> str:
        """sha256 of everything a model sees of the split: its inputs, and a graph's features and edges (a key
        for what was computed from them: a teacher's logits, a teacher-output cache)."""
        inputs = [self.x] if self.graph is None else [self.x, self.graph.x, self.graph.edge_index]
        inputs += [*self.more, *(self.named[k] for k in sorted(self.named))]  # none for one-input data: same key
        return tensor_digest(inputs)

    def unlabel(self) -> "Split":
        """The same samples with their labels moved to `hidden_y`: what training may not see."""
        return replace(self, y=None, hidden_y=self.y if self.y is not None else self.hidden_y)

    def batch(self, index: Tensor, x: Tensor | None = None, **fields: Any) -> "Batch":
        """A batch of the samples at `index`; `x` replaces their inputs (an augmented view of them)."""
        y = None if self.y is None else self.y.index_select(0, index)
        if self.graph is not None:
            return Batch(x=self.graph.x, extra=(self.graph.edge_index,), select=self.x.index_select(0, index),
                         y=y, index=index, **fields)
        return Batch(x=self.x.index_select(0, index) if x is None else x, y=y, index=index,
                     extra=tuple(t.index_select(0, index) for t in self.more),
                     named={k: t.index_select(0, index) for k, t in self.named.items()}, calling=self.calling,
                     **fields)


@dataclass
class DataBundle:
    """Everything `data.build` makes (val and test are None only for data given through the Python API without
    them). `unlabeled` exists with a label budget; `splits` records how the parts were cut (indices into the source's training split, seeds), saved with each run so it can be reproduced."""

    spec: DataSpec
    train: Split
    val: Split | None
    test: Split | None
    unlabeled: Split | None = None
    splits: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> Split:
        part = getattr(self, name, None) if name in ("train", "val", "test", "unlabeled") else None
        if not isinstance(part, Split):
            raise KeyError(f"no {name!r} split in this data (have: train, val, test"
                           f"{', unlabeled' if self.unlabeled is not None else ''})")
        return part


@dataclass
class Batch:
    """A batch of samples from one split.

    `x` is the model's first input (augmented samples, token ids, or a graph's node features), `extra` the
    other positional ones (a graph's edge_index, a mask) and `named` the keyword ones: the model is called as
    `model(x, *extra, **named)` (with `calling.x_name`, x goes by that name too), its logits read by
    `logits_of` at `calling.output_key`, and `select` (graphs) picks this batch's rows from the output. `y`
    holds the hard labels (None for unlabeled samples); `target` is the label distribution after mixup/cutmix
    (None when no mixing happened). `index` is each sample's position in its split, `split` names the split and
    `params` holds the augmentation parameters, so that a teacher-output cache can replay exactly this view;
    `view_epoch` is set when the views were replayed from a recording (a teacher-output cache): the recorded epoch
    whose teacher outputs belong to them.
    """

    x: Tensor
    y: Tensor | None
    index: Tensor
    target: Tensor | None = None
    params: dict[str, Tensor] = field(default_factory=dict)
    extra: tuple[Tensor, ...] = ()
    select: Tensor | None = None
    split: str = "train"
    view_epoch: int | None = None
    named: dict[str, Tensor] = field(default_factory=dict)
    calling: Calling = Calling()

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def labels(self) -> Tensor:
        """What the hard-label loss should fit: the mixed distribution if any, else the class indices."""
        if self.target is not None:
            return self.target
        if self.y is None:
            raise ValueError(f"a batch of the {self.split!r} split has no labels; this loss needs labeled data")
        return self.y

    def forward(self, model: nn.Module) -> Tensor:
        """`model`'s logits for this batch's samples: model(x, *extra, **named) read by `logits_of`, then the
        selected rows (graphs)."""
        return self.rows(logits_of(self.call(model), self.calling.output_key))

    def call(self, model: nn.Module) -> Any:
        """What `model` returns on this batch's inputs, as it returns it (a tensor, a dict, an output object)."""
        if self.calling.x_name is None:
            return model(self.x, *self.extra, **self.named)
        return model(*self.extra, **{self.calling.x_name: self.x}, **self.named)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each input's name (`x` or its keyword, `input i` for further positional ones) and shape: what errors
        about a model's inputs show."""
        out = {self.calling.x_name or "x": tuple(self.x.shape)}
        out.update({f"input {i + 1}": tuple(t.shape) for i, t in enumerate(self.extra)})
        return out | {k: tuple(t.shape) for k, t in self.named.items()}

    def rows(self, t: Tensor) -> Tensor:
        """The rows of a per-sample output (logits, a tapped feature) that belong to this batch's samples."""
        return t if self.select is None else t.index_select(0, self.select)

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return replace(self, x=move(self.x), y=move(self.y), target=move(self.target),
                       extra=tuple(move(t) for t in self.extra), select=move(self.select),
                       named={k: move(t) for k, t in self.named.items()})
