"""The `cache` teacher source: outputs read from a `TeacherCache` on the views it recorded."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kdforge.data.types import Batch
from kdforge.errors import CacheError
from kdforge.registry import TEACHERS
from kdforge.teachers.base import TeacherOutput
from kdforge.teachers.cache.key import CacheSettings
from kdforge.teachers.cache.store import TeacherCache
from kdforge.teachers.live import LiveTeacher


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
