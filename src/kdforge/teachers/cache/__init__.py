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

The package in parts: `key` (what a cache is for, its key and where it lives), `store` (the shards of a built
cache: sha256-checked, memory-mapped, read by rows; and its recorded views, the loader's `ViewSource`), `build`
(recording the teacher, and the open-or-build policy), `source` (the `cache` teacher source reading the store).
"""
from kdforge.teachers.cache.build import build, estimate_bytes, open_or_build
from kdforge.teachers.cache.key import CacheRequest, CacheSettings, cache_key, default_path, differences, key_hash
from kdforge.teachers.cache.source import CachedTeacher
from kdforge.teachers.cache.store import RecordedViews, TeacherCache

__all__ = ["CacheRequest", "CacheSettings", "CachedTeacher", "RecordedViews", "TeacherCache", "build", "cache_key",
           "default_path", "differences", "estimate_bytes", "key_hash", "open_or_build"]
