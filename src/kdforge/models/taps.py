"""Features by module path: forward hooks on named submodules of any nn.Module, no change to model code.

A path is a name from `model.named_modules()` (`layer3`, `layer3.1.relu`, `features.4`); `path:input` takes
the module's input instead of its output. Typical use inside a method:

    taps = Taps(student, ["layer3"])
    with taps.capture() as feats:
        logits = student(x)
    feats["layer3"]                      # the output of student.layer3 in that forward, with its graph

Outside `capture()` the hooks store nothing, so evaluation forwards cost nothing extra. A captured tensor that
is changed in place later in the forward (an in-place ReLU after a BatchNorm, say) would silently hold the wrong
values; that is detected from the tensor's version counter and reported with the path to tap instead.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from difflib import get_close_matches
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from kdforge.data.types import Batch
from kdforge.errors import ConfigError

INPUT_SUFFIX = ":input"


def resolve(model: nn.Module, path: str) -> nn.Module:
    """The submodule at `path`, or a ConfigError listing the closest module names (and the first few names)."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = get_close_matches(path, names, n=5, cutoff=0.5)
        hint = f"closest: {', '.join(close)}" if close else f"modules include: {', '.join(names[:12])}"
        raise ConfigError(f"no module {path!r} in {type(model).__name__}; {hint}") from None


class Taps:
    """Forward hooks on the submodules at `paths`; `capture()` collects their outputs (or inputs) per forward."""

    def __init__(self, model: nn.Module, paths: Sequence[str] = ()) -> None:
        self.model = model
        self._handles: dict[str, RemovableHandle] = {}
        self._store: dict[str, tuple[Any, int | None]] | None = None
        self.add(paths)

    @property
    def paths(self) -> list[str]:
        return list(self._handles)

    def add(self, paths: Sequence[str]) -> None:
        """Hook more paths (a path already hooked is kept once)."""
        for path in paths:
            if path in self._handles:
                continue
            name, wants_input = (path[: -len(INPUT_SUFFIX)], True) if path.endswith(INPUT_SUFFIX) else (path, False)
            module = resolve(self.model, name)
            if wants_input:
                handle = module.register_forward_pre_hook(lambda _m, args, p=path: self._record(p, args[0]))
            else:
                handle = module.register_forward_hook(lambda _m, _args, out, p=path: self._record(p, out))
            self._handles[path] = handle

    def remove(self) -> None:
        for handle in self._handles.values():
            handle.remove()
        self._handles.clear()

    def _record(self, path: str, value: Any) -> None:
        if self._store is not None:  # only inside capture(); a module called twice keeps its last call
            self._store[path] = (value, value._version if isinstance(value, Tensor) else None)

    @contextmanager
    def capture(self) -> Iterator[dict[str, Any]]:
        """Yield a dict that holds {path: feature} once the block (one forward pass) has run."""
        features: dict[str, Any] = {}
        self._store = {}
        try:
            yield features
            store = self._store
        finally:
            self._store = None
        features.update(self._checked(store))

    def _checked(self, store: dict[str, tuple[Any, int | None]]) -> dict[str, Any]:
        missing = [p for p in self._handles if p not in store]
        if missing:
            raise ConfigError(f"tapped module(s) {', '.join(missing)} of {type(self.model).__name__} did not run in "
                              "the forward pass; tap modules that the forward calls")
        for path, (value, version) in store.items():
            if version is not None and value._version != version:
                raise ConfigError(
                    f"the output of {path!r} was changed in place later in the forward (e.g. by an in-place ReLU), "
                    f"so the captured values would be wrong; tap the module that applies that op instead, or use "
                    f"'{path}{INPUT_SUFFIX}' on the next module")
        return {path: value for path, (value, _) in store.items()}

    @torch.no_grad()
    def shapes(self, batch: Batch) -> dict[str, tuple[int, ...]]:
        """Each tapped feature's shape without the batch dimension, from one forward on `batch` in eval mode
        (so BatchNorm statistics and RNG streams are untouched); the model's mode is restored after."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.capture() as features:
                batch.forward(self.model)
        finally:
            self.model.train(was_training)
        return {path: tuple(value.shape[1:]) for path, value in features.items()}


@contextmanager
def replaced_output(model: nn.Module, path: str, value: Tensor) -> Iterator[None]:
    """Inside the block, the submodule at `path` returns `value` instead of its own output, so a forward of `model`
    runs its later layers on `value` (with gradients to it): how a method evaluates what a substitute feature
    would make of the rest of a network. `value` must have the shape the module's output has."""
    if path.endswith(INPUT_SUFFIX):
        raise ConfigError(f"{path!r}: only a module's output can be replaced, not its input")

    def swap(_m: nn.Module, _args: Any, out: Any) -> Tensor:
        if not isinstance(out, Tensor) or out.shape != value.shape:
            raise ValueError(f"replaced_output: {path!r} returns {getattr(out, 'shape', type(out))}, "
                             f"the replacement is {tuple(value.shape)}")
        return value

    handle = resolve(model, path).register_forward_hook(swap)
    try:
        yield
    finally:
        handle.remove()
