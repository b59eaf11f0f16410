"""Recording the teacher's outputs into a cache folder (written under a temporary name and renamed into place, so
a folder is complete or absent), and the open-or-build policy a run applies (`teacher.cache.on_missing` /
`on_mismatch`)."""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import Tensor

from kdforge.data import Batches, DataBundle
from kdforge.data.augment import AugmentSettings
from kdforge.data.types import Batch
from kdforge.errors import CacheError, ConfigError
from kdforge.fileio import atomic_write_text, write_tensors
from kdforge.teachers.base import TeacherOutput
from kdforge.teachers.cache.key import CacheRequest, cache_key, default_path, differences, key_hash
from kdforge.teachers.cache.source import CachedTeacher
from kdforge.teachers.cache.store import TeacherCache, size_text
from kdforge.teachers.live import LiveTeacher


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
        raise ConfigError(f"teacher.cache: the cache would take {size_text(need)}{feats}, over teacher.cache."
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
    cache = TeacherCache(path)
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
