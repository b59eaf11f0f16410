"""Every seed the data streams derive from a run's seed, in one place.

A run has one seed. Each split's batches come from their own stream (`stream_seed`: the training split's is the
run's seed itself, every other split's a hash of it and the split's name), and each epoch of a stream from a
generator seeded by (stream seed, epoch) alone (`epoch_seed`). The trainer, the step context's other loaders,
the teacher-output cache (which records the views those loaders will draw) and the loader all call these, so
they cannot disagree. `hash_seed` derives any other named stream (per-process RNG, a method's own draws).
"""
from __future__ import annotations

import hashlib


def _digest(text: str, size: int) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=size).digest(), "little")


def hash_seed(seed: int, name: str) -> int:
    """A seed for a named stream derived from `seed` (stable across processes and Python versions)."""
    return _digest(f"{seed}:{name}", 7)


def stream_seed(seed: int, split: str) -> int:
    """The seed of `split`'s batches in a run seeded `seed`: the run's seed for train, a derived one otherwise."""
    return seed if split == "train" else hash_seed(seed, split)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit seed that depends on (seed, epoch) only; hashing keeps (s, e+1) and (s+1, e) unrelated."""
    return _digest(f"kdforge.epoch:{seed}:{epoch}", 8)
