"""The teacher-output cache: the teacher's outputs computed once, stored with the view they were computed on.

For each training split and each of E recorded epochs, every sample's augmentation (crop offset, flip, mixing
partner, ratio and box, in the loader's per-sample form) is drawn exactly as the run's loader draws it, the
teacher runs on that view, and its logits (fp16 or fp32; all of them or the top k) and the features a method
taps are stored in sharded safetensors files. Training then replays each sample's recorded view for the student
and reads the teacher's output on it from memory-mapped files: the teacher never runs (FKD, "A Fast Knowledge
Distillation Framework for Visual Recognition", Shen & Xing, ECCV 2022, which records crop coordinates, flips and
soft labels per sample and epoch the same way). Past the E epochs the views cycle, or the live teacher takes over.

The cache's key is a hash of the split contents, the teacher's weights, the augmentation settings and the
storage settings; the manifest keeps every part of it, so a mismatch says what differs. Each shard's sha256 is
in the manifest and is checked before the shard is first read; a damaged shard is named in the error. Building
writes into a temporary folder renamed into place, so a cache folder is complete or absent.

Layout: <path>/manifest.json and <path>/<split>/epoch_XXXX/shard_XXXX.safetensors, tensors (rows = samples in
split order): "logits" [n, C], or "topk_values" [n, k] + "topk_indices" [n, k] + "lse" [n] (log-sum-exp of all
C logits, so the mass outside the top k is known); "feature:<path>" [n, ...]; "view:<param>" for each
per-sample augmentation param (see `kdforge.data.augment`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import Tensor, nn

from kdforge.data.augment import AugmentSettings
from kdforge.data import Batches, DataBundle
from kdforge.data.types import Batch
from kdforge.errors import CacheError, ConfigError
from kdforge.fileio import TensorFileError, atomic_write_text, read_tensors, tensor_digest, write_tensors
from kdforge.registry import TEACHERS
from kdforge.teachers.base import TeacherOutput
from kdforge.teachers.live import LiveTeacher

FORMAT = 1
DROP_OFFSET = 1e4  # rest="drop": missing classes sit this far below the smallest kept logit (softmax gives 0)


# ---- what a cache is for ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheSettings:
    """How the cache is stored and used (the YAML's `teacher.cache`, whose schema documents and validates each
    field; the defaults are its): where, how many views per sample, past them `cycle` or `live`, `full` or `topk`
    logits (`rest` of the mass `uniform` or `drop`), the storage dtype, rows per shard, a size limit, and whether a
    mismatched or missing cache is refused or (re)built."""

    path: str | None = None
    epochs: int = 1
    after: str = "cycle"
    storage: str = "full"
    k: int = 5
    rest: str = "uniform"
    dtype: str = "float16"
    shard_rows: int = 65536
    max_gb: float = 8.0
    on_mismatch: str = "refuse"
    on_missing: str = "build"


@dataclass(frozen=True)
class CacheRequest:
    """Everything a cache's contents depend on, besides the teacher and the data it is built from."""

    cfg: CacheSettings
    augment: AugmentSettings
    splits: tuple[str, ...]
    features: tuple[str, ...] = ()
    batch_size: int = 128  # how views are drawn (mixing partners come from the same batch): recorded, not keyed
    seed: int = 0

    def epochs(self) -> int:
        """Views worth recording: without augmentation every epoch's view is the raw sample, so one."""
        return self.cfg.epochs if self.augment.on else 1


def cache_key(teacher: nn.Module, bundle: DataBundle, req: CacheRequest) -> dict[str, Any]:
    """The parts of the key, readable, as the manifest keeps them (a mismatch names the part that differs)."""
    return {
        "format": FORMAT,
        "teacher_weights": tensor_digest(list(teacher.state_dict().values())),
        "data": {name: bundle.split(name).digest() for name in req.splits},
        "augment": req.augment.to_json(),
        "epochs": req.epochs(),
        "storage": {"kind": req.cfg.storage, "k": req.cfg.k if req.cfg.storage == "topk" else None,
                    "dtype": req.cfg.dtype},
        "features": sorted(req.features),
    }


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Readable names of the key parts that differ."""
    out = []
    for part in sorted(set(saved) | set(wanted)):
        if saved.get(part) != wanted.get(part):
            if isinstance(wanted.get(part), dict) and isinstance(saved.get(part), dict):
                inner = [k for k in sorted(set(saved[part]) | set(wanted[part])) if saved[part].get(k) != wanted[part].get(k)]
                out += [f"{part}.{k} (cached {_short(saved[part].get(k))}, this run {_short(wanted[part].get(k))})"
                        for k in inner]
            else:
                out.append(f"{part} (cached {_short(saved.get(part))}, this run {_short(wanted.get(part))})")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text[:12] + "…" if len(text) > 40 and text.startswith('"') else text[:60]


# ---- building ----------------------------------------------------------------------------------------------
def estimate_bytes(teacher: LiveTeacher, bundle: DataBundle, req: CacheRequest) -> int:
    """Bytes the cache will take: outputs, features and views of every split and recorded epoch."""
    example = bundle.train.batch(torch.arange(min(2, len(bundle.train))))
    out = teacher.outputs(example)
    item = 2 if req.cfg.dtype == "float16" else 4
    classes = out.logits.shape[-1]
    per_row = (req.cfg.k * (item + 2) + 4) if req.cfg.storage == "topk" else classes * item
    per_row += sum(math.prod(out.features[p].shape[1:]) * item for p in req.features)
    per_row += 64  # views: offsets, flags, partner, ratio, box
    return per_row * req.epochs() * sum(len(bundle.split(s)) for s in req.splits)


def build(path: Path, teacher: LiveTeacher, bundle: DataBundle, req: CacheRequest, key: dict[str, Any],
          progress: bool = True) -> None:
    """Record the teacher's outputs into `path` (replaced as a whole at the end, never half written)."""
    need = estimate_bytes(teacher, bundle, req)
    if need > req.cfg.max_gb * 1e9:
        feats = f" ({len(req.features)} tapped feature map(s) included)" if req.features else ""
        raise ConfigError(f"teacher.cache: the cache would take {_size(need)}{feats}, over teacher.cache."
                          f"max_gb={req.cfg.max_gb:g}; lower teacher.cache.epochs, use storage: topk, raise max_gb, "
                          "or run this method with teacher.source: live")
    tmp = path.with_name(f".{path.name}.building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    manifest: dict[str, Any] = {"key": key, "key_hash": key_hash(key), "splits": {},
                                "built": {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "seed": req.seed,
                                          "batch_size": req.batch_size, "estimated_bytes": need}}
    teacher.tap(req.features)
    try:
        with Progress(disable=not progress) as bar:
            for name in req.splits:
                manifest["splits"][name] = _build_split(tmp, name, teacher, bundle, req, bar)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=1))
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _size(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _build_split(root: Path, name: str, teacher: LiveTeacher, bundle: DataBundle, req: CacheRequest,
                 bar: Progress) -> dict[str, Any]:
    split = bundle.split(name)
    loader = Batches(bundle, req.batch_size, req.augment).loader(name, req.seed)  # the views the run will draw
    epochs = []
    task = bar.add_task(f"teacher cache: {name}", total=req.epochs() * len(loader))
    for e in range(req.epochs()):
        rows = _EpochRows(len(split), req)
        for batch in loader.epoch(e):  # one process, no dropped batch: every sample once
            out = teacher.outputs(batch)
            rows.put(batch, out)
            bar.advance(task)
        epochs.append(rows.save(root / name / f"epoch_{e:04d}", req.cfg.shard_rows, root))
    return {"rows": len(split), "epochs": epochs}


class _EpochRows:
    """One epoch's rows, filled batch by batch at the samples' positions, then written as shards."""

    def __init__(self, n: int, req: CacheRequest) -> None:
        self.n, self.req = n, req
        self.dtype = torch.float16 if req.cfg.dtype == "float16" else torch.float32
        self.tensors: dict[str, Tensor] = {}
        self.view_defaults = _view_defaults(n, req.augment)

    def put(self, batch: Batch, out: TeacherOutput) -> None:
        index = batch.index
        logits = out.logits.detach().float().cpu()
        if self.req.cfg.storage == "full":
            self._set("logits", index, logits.to(self.dtype))
        else:
            k = min(self.req.cfg.k, logits.shape[-1])
            values, idx = logits.topk(k, dim=-1)
            self._set("topk_values", index, values.to(self.dtype))
            small = logits.shape[-1] <= torch.iinfo(torch.int16).max  # class ids fit 2 bytes
            self._set("topk_indices", index, idx.to(torch.int16 if small else torch.int32))
            self._set("lse", index, logits.logsumexp(-1))
        for path in self.req.features:
            self._set(f"feature:{path}", index, out.features[path].detach().cpu().to(self.dtype))
        for key, default in self.view_defaults.items():
            value = batch.params.get(key.removeprefix("view:"))
            if key not in self.tensors:
                self.tensors[key] = default.clone()
            if value is not None:
                self.tensors[key][index] = value.to(default.dtype)
        if "view:mix_cut" in self.view_defaults and "mix_box" in batch.params:
            self.tensors["view:mix_cut"][index] = True

    def _set(self, key: str, index: Tensor, value: Tensor) -> None:
        if key not in self.tensors:
            self.tensors[key] = torch.zeros((self.n, *value.shape[1:]), dtype=value.dtype)
        self.tensors[key][index] = value

    def save(self, folder: Path, shard_rows: int, root: Path) -> list[dict[str, Any]]:
        folder.mkdir(parents=True, exist_ok=True)
        shards = []
        for j, start in enumerate(range(0, self.n, shard_rows)):
            stop = min(start + shard_rows, self.n)
            file = folder / f"shard_{j:04d}.safetensors"
            sums = write_tensors(file, {k: v[start:stop].contiguous() for k, v in self.tensors.items()})
            shards.append({"file": str(file.relative_to(root)), "rows": [start, stop], **sums})
        return shards


def _view_defaults(n: int, augment: AugmentSettings) -> dict[str, Tensor]:
    """Per-sample view params that mean "this sample as it is", for every param the settings can produce; a row
    of a batch the loader did not mix keeps them (partner = itself, ratio 1: replaying it changes nothing)."""
    out: dict[str, Tensor] = {}
    if augment.crop_padding:
        out["view:crop_shift"] = torch.zeros(n, 2, dtype=torch.int16)
    if augment.flip:
        out["view:flip"] = torch.zeros(n, dtype=torch.bool)
    if augment.mixup_alpha > 0 or augment.cutmix_alpha > 0:
        out["view:mix_partner"] = torch.arange(n)
        out["view:mix_lam"] = torch.ones(n, dtype=torch.float32)
        if augment.crop_padding:
            out["view:partner_crop_shift"] = torch.zeros(n, 2, dtype=torch.int16)
        if augment.flip:
            out["view:partner_flip"] = torch.zeros(n, dtype=torch.bool)
        if augment.cutmix_alpha > 0:
            out["view:mix_box"] = torch.zeros(n, 4, dtype=torch.int16)
            if augment.mixup_alpha > 0:
                out["view:mix_cut"] = torch.zeros(n, dtype=torch.bool)
    return out


# ---- reading -----------------------------------------------------------------------------------------------
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
    """An opened cache: rows of a split's recorded epoch, by sample position. Also the loader's `ViewSource`."""

    def __init__(self, path: Path, after: str = "cycle") -> None:
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
        self.after = after

    @property
    def epochs(self) -> int:
        return int(self.key["epochs"])

    @property
    def features(self) -> list[str]:
        return list(self.key["features"])

    # -- ViewSource ------------------------------------------------------------------------------------------
    def covers(self, split: str, epoch: int) -> bool:
        return split in self._shards and (epoch < self.epochs or self.after == "cycle")

    def view(self, split: str, epoch: int, index: Tensor) -> tuple[int, dict[str, Tensor]]:
        """The recorded epoch that serves `epoch` (cycled) and the per-sample view params of the rows at `index`."""
        recorded = epoch % self.epochs
        rows = self._rows(split, recorded, index, prefix="view:")
        out = {k.removeprefix("view:"): v for k, v in rows.items()}
        for key in ("crop_shift", "partner_crop_shift", "mix_box"):
            if key in out:
                out[key] = out[key].long()
        if "mix_lam" in out and bool((out["mix_lam"] == 1).all()):
            out = {k: v for k, v in out.items() if k in ("crop_shift", "flip")}  # nothing in this batch is mixed
        elif "mix_cut" in out and bool(out["mix_cut"].all()):
            out.pop("mix_cut")  # a whole batch of cutmix rows: the plain cutmix replay
        return recorded, out

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


# ---- the teacher source ------------------------------------------------------------------------------------
@TEACHERS.register("cache")
class CachedTeacher(nn.Module):
    """Teacher outputs read from a `TeacherCache` on the views it recorded; the live teacher answers what the
    cache does not hold (the method's dry forward at set-up, epochs past the recorded ones with `after: live`)."""

    def __init__(self, live: LiveTeacher, cfg: CacheSettings) -> None:
        super().__init__()
        self.live = live
        self.cfg = cfg
        self.paths: list[str] = []
        self.cache: TeacherCache | None = None
        self.classes: int | None = None

    @classmethod
    def from_model(cls, model: nn.Module, cache: CacheSettings | None = None) -> "CachedTeacher":
        return cls(LiveTeacher(model), cache or CacheSettings())

    @property
    def network(self) -> None:
        """None: outputs come from the recording, not from running the teacher (methods that run or copy the
        teacher network, DFA's search and ProKT's guide, need a live source)."""
        return None

    def release(self) -> nn.Module:
        return self.live.release()

    def train(self, mode: bool = True) -> "CachedTeacher":
        return super().train(False)

    def tap(self, paths: Sequence[str]) -> None:
        self.live.tap(paths)
        self.paths += [p for p in paths if p not in self.paths]

    def attach(self, cache: TeacherCache, classes: int) -> None:
        """Use `cache` from now on; it must hold the features this source was asked for."""
        missing = [p for p in self.paths if p not in cache.features]
        if missing:
            raise CacheError(f"the teacher cache {cache.path} holds no features at {', '.join(missing)} (it has "
                             f"{', '.join(cache.features) or 'none'}); rebuild it for this method")
        self.cache, self.classes = cache, classes

    @torch.no_grad()
    def outputs(self, batch: Batch) -> TeacherOutput:
        if self.cache is None or batch.view_epoch is None:
            return self.live.outputs(batch)
        out = self.cache.outputs(batch.split, batch.view_epoch, batch.index, self.paths, self.classes or 0, self.cfg.rest)
        device = batch.x.device
        return TeacherOutput(out.logits.to(device), {k: v.to(device) for k, v in out.features.items()})


def default_path(key: dict[str, Any]) -> Path:
    from kdforge.data.root import cache_dir

    return cache_dir() / "teacher_outputs" / key_hash(key)


def open_or_build(source: CachedTeacher, bundle: DataBundle, req: CacheRequest, is_main: bool = True,
                  barrier=lambda: None, rebuild: bool = False, progress: bool = True) -> TeacherCache:
    """The cache this run needs, built first when missing (or mismatched, or `rebuild`) as `teacher.cache` says,
    and attached to `source`, which reads from it from now on; only the main process builds, the others wait and
    then read it."""
    cfg = req.cfg
    key = cache_key(source.live.network, bundle, req)
    path = Path(cfg.path) if cfg.path is not None else default_path(key)
    where = f"teacher.cache.path={path}" if cfg.path is not None else f"the teacher cache {path}"
    if is_main:
        state = _state(path, key)
        if state == "missing" and cfg.on_missing == "refuse" and not rebuild:
            raise CacheError(f"{where} does not exist and teacher.cache.on_missing=refuse; build it with "
                             "kdforge cache build CONFIG")
        if state == "mismatch" and cfg.on_mismatch == "refuse" and not rebuild:
            diff = differences(TeacherCache(path).key, key)
            raise CacheError(f"{where} was built for other inputs: {'; '.join(diff)}; rebuild it "
                             "(teacher.cache.on_mismatch=rebuild or kdforge cache build CONFIG --rebuild) or choose "
                             "another teacher.cache.path")
        if state != "ok" or rebuild:
            build(path, source.live, bundle, req, key, progress)
    barrier()
    cache = TeacherCache(path, after=cfg.after)
    if cache.key != key:  # another process rebuilt it in between, or it was swapped under us
        raise CacheError(f"{where} changed while this run opened it; run again")
    source.attach(cache, bundle.spec.num_classes)
    return cache


def _state(path: Path, key: dict[str, Any]) -> str:
    if not (path / "manifest.json").exists():
        return "missing"
    try:
        return "ok" if TeacherCache(path).key == key else "mismatch"
    except CacheError:
        return "mismatch"


def describe(cache: TeacherCache) -> str:
    """A few lines on what a cache holds, for `kdforge cache info`."""
    key, built = cache.key, cache.manifest.get("built", {})
    storage = key["storage"]
    kind = "all logits" if storage["kind"] == "full" else f"top-{storage['k']} logits + log-sum-exp"
    splits = ", ".join(f"{name} ({info['rows']} samples)" for name, info in cache.manifest["splits"].items())
    aug = {k: v for k, v in key["augment"].items() if v and k != "mix_prob"} or "none"
    return "\n".join([
        f"teacher cache {cache.path} (key {cache.manifest['key_hash']})",
        f"  splits: {splits}; {key['epochs']} recorded epoch(s) of views; augmentation: {aug}",
        f"  storage: {kind}, {storage['dtype']}; features: {', '.join(key['features']) or 'none'}",
        f"  teacher weights sha256 {key['teacher_weights'][:16]}…; built {built.get('time', '?')} with seed "
        f"{built.get('seed', '?')}, batch {built.get('batch_size', '?')}",
        f"  size on disk: {_size(cache.size_bytes())}",
    ])
