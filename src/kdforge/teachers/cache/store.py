"""A built cache: its manifest and shards (each checked against its sha256 before it is first read, then
memory-mapped: only the rows used are read), read by sample rows; and its recorded views, which the API hands to
the loader (`RecordedViews`, a `kdforge.data.ViewSource`) apart from the teacher source that reads the outputs."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from kdforge.errors import CacheError
from kdforge.fileio import TensorFileError, read_tensors
from kdforge.teachers.base import TeacherOutput

DROP_OFFSET = 1e4  # rest="drop": missing classes sit this far below the smallest kept logit (softmax gives 0)


class _Shard:
    """One safetensors file, memory-mapped: tensors are views of the file, read only where rows are taken."""

    def __init__(self, path: Path, rows: tuple[int, int], sha256: str) -> None:
        self.path, self.start, self.stop, self.sha256 = path, rows[0], rows[1], sha256
        self._tensors: dict[str, Tensor] | None = None

    def tensors(self) -> dict[str, Tensor]:
        if self._tensors is None:
            try:
                self._tensors = read_tensors(self.path, self.sha256, mmap=True)
            except TensorFileError as e:
                what = {"missing": "is missing", "mismatch": "is damaged (its sha256 does not match the manifest)"}
                raise CacheError(f"teacher cache shard {self.path} {what.get(e.problem, f'is unreadable ({e.detail})')}"
                                 "; rebuild the cache (kdforge cache build CONFIG --rebuild)") from None
        return self._tensors


class TeacherCache:
    """An opened cache: rows of a split's recorded epoch, by sample position (the teacher's outputs, the views)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        manifest_file = self.path / "manifest.json"
        try:
            self.manifest = json.loads(manifest_file.read_text())
            self.key = self.manifest["key"]
            self._shards = {name: [[_Shard(self.path / s["file"], tuple(s["rows"]), s["sha256"]) for s in epoch]
                                   for epoch in info["epochs"]] for name, info in self.manifest["splits"].items()}
        except FileNotFoundError:
            raise CacheError(f"{self.path} holds no teacher cache (no manifest.json); build one with "
                             "kdforge cache build CONFIG") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CacheError(f"{manifest_file} is unreadable ({e}); rebuild the cache "
                             "(kdforge cache build CONFIG --rebuild)") from None

    @property
    def epochs(self) -> int:
        return int(self.key["epochs"])

    @property
    def features(self) -> list[str]:
        return list(self.key["features"])

    def has_split(self, split: str) -> bool:
        return split in self._shards

    def views(self, split: str, recorded: int, index: Tensor) -> dict[str, Tensor]:
        """Per-sample view params of the rows at `index` in recorded epoch `recorded`."""
        rows = self._rows(split, recorded, index, prefix="view:")
        out = {k.removeprefix("view:"): v for k, v in rows.items()}
        for key in ("crop_shift", "partner_crop_shift", "mix_box"):
            if key in out:
                out[key] = out[key].long()
        if "mix_lam" in out and bool((out["mix_lam"] == 1).all()):
            out = {k: v for k, v in out.items() if k in ("crop_shift", "flip")}  # nothing in this batch is mixed
        elif "mix_cut" in out and bool(out["mix_cut"].all()):
            out.pop("mix_cut")  # a whole batch of cutmix rows: the plain cutmix replay
        return out

    # -- outputs -------------------------------------------------------------------------------------------
    def outputs(self, split: str, epoch: int, index: Tensor, features: Sequence[str], classes: int,
                rest: str) -> TeacherOutput:
        names = ("logits", "topk_values", "topk_indices", "lse", *(f"feature:{p}" for p in features))
        rows = self._rows(split, epoch, index, names=names)
        logits = rows["logits"].float() if "logits" in rows else _spread(rows, classes, rest)
        return TeacherOutput(logits=logits, features={p: rows[f"feature:{p}"].float() for p in features})

    def _rows(self, split: str, epoch: int, index: Tensor, prefix: str | None = None,
              names: Sequence[str] = ()) -> dict[str, Tensor]:
        if split not in self._shards:
            raise CacheError(f"the teacher cache {self.path} holds no {split!r} split (it has "
                             f"{', '.join(self._shards)}); rebuild it for this run")
        wanted = lambda key: (prefix is not None and key.startswith(prefix)) or key in names  # noqa: E731
        index = index.cpu()
        shards = self._shards[split][epoch]
        if len(shards) == 1:  # the common case (up to `shard_rows` samples): no search for the rows' shards
            return {k: t.index_select(0, index) for k, t in shards[0].tensors().items() if wanted(k)}
        parts: dict[str, list[tuple[Tensor, Tensor]]] = {}
        for shard in shards:
            inside = ((index >= shard.start) & (index < shard.stop)).nonzero().flatten()
            if not len(inside):
                continue
            local = index[inside] - shard.start
            for key, tensor in shard.tensors().items():
                if wanted(key):
                    parts.setdefault(key, []).append((inside, tensor.index_select(0, local)))
        out = {}
        for key, pieces in parts.items():
            if len(pieces) == 1:
                out[key] = pieces[0][1]
            else:
                full = torch.empty((len(index), *pieces[0][1].shape[1:]), dtype=pieces[0][1].dtype)
                for where, rows in pieces:
                    full[where] = rows
                out[key] = full
        return out

    def verify(self) -> list[str]:
        """Check every shard's sha256; the damaged or missing ones, by path."""
        bad = []
        for epochs in self._shards.values():
            for shards in epochs:
                for shard in shards:
                    try:
                        shard.tensors()
                    except CacheError:
                        bad.append(str(shard.path))
        return bad

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


class RecordedViews:
    """A cache's recorded views as the loader's `ViewSource`: for the epochs it covers, each sample's view is the
    one the teacher's stored output was computed on. Past the recorded epochs the views cycle (`after` "cycle")
    or the loader draws new ones (then the teacher source runs the live teacher: the batch has no view_epoch)."""

    def __init__(self, store: TeacherCache, after: str = "cycle") -> None:
        self.store, self.after = store, after

    def covers(self, split: str, epoch: int) -> bool:
        return self.store.has_split(split) and (epoch < self.store.epochs or self.after == "cycle")

    def view(self, split: str, epoch: int, index: Tensor) -> tuple[int, dict[str, Tensor]]:
        """The recorded epoch that serves `epoch` (cycled) and the per-sample view params of the rows at `index`."""
        recorded = epoch % self.store.epochs
        return recorded, self.store.views(split, recorded, index)


def size_text(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _spread(rows: dict[str, Tensor], classes: int, rest: str) -> Tensor:
    """Full logits from the top k: kept classes as recorded; the others share the rest of the mass evenly
    (their logit is lse + log(rest / (C - k)), so softmax at T=1 gives exactly the recorded top-k
    probabilities and the rest spread uniformly), or get none (`drop`: far below the smallest kept logit)."""
    values, idx, lse = rows["topk_values"].float(), rows["topk_indices"].long(), rows["lse"].float()
    k = values.shape[-1]
    if rest == "drop" or k == classes:
        fill = values.min(-1).values - DROP_OFFSET
    else:
        mass = (1 - (values - lse[:, None]).exp().sum(-1)).clamp_min(1e-12)
        fill = lse + (mass / (classes - k)).log()
    logits = fill[:, None].expand(len(values), classes).clone()
    return logits.scatter_(1, idx, values)
