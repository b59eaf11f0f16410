"""The registered operations a distiller program (KD-Zero, `methods/kdzero.py`) names: transforms (with an optional
numeric argument) and distances. They live with the method, below the search (`kdforge.search`), which draws
programs from them. Each entry adapts a pure function of `kdforge.losses.kdzero`; registering one more makes it
usable in programs and, once listed in a search space, searchable."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from kdforge.losses import kdzero as ops
from kdforge.registry import Registry

TransformFn = Callable[[Tensor, Tensor, "float | None"], Tensor]  # (knowledge, labels, argument) -> knowledge
DistanceFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Transform:
    fn: TransformFn
    arg_choices: tuple[float, ...] = ()  # values a search draws the argument from; () = the op takes none


TRANSFORMS = Registry("transform")
DISTANCES = Registry("distance")


def transform(name: str, arg_choices: tuple[float, ...] = ()) -> Callable[[TransformFn], TransformFn]:
    """Register `fn(x, labels, arg)` as the transform `name` (written `name:arg` in a program when it takes one)."""
    def decorator(fn: TransformFn) -> TransformFn:
        TRANSFORMS.register(name)(Transform(fn, arg_choices))
        return fn
    return decorator


TEMPERATURES = (1.0, 2.0, 4.0, 8.0)


@transform("softmax", TEMPERATURES)
def _softmax(x: Tensor, labels: Tensor, arg: float | None) -> Tensor:
    return ops.softmax_t(x, arg)  # type: ignore[arg-type]


@transform("sigmoid", TEMPERATURES)
def _sigmoid(x: Tensor, labels: Tensor, arg: float | None) -> Tensor:
    return ops.sigmoid_t(x, arg)  # type: ignore[arg-type]


@transform("mask_target")
def _mask_target(x: Tensor, labels: Tensor, arg: float | None) -> Tensor:
    return ops.mask_target(x, labels)


def _unary(fn: Callable[[Tensor], Tensor]) -> TransformFn:
    """A transform of the knowledge alone (no labels, no argument)."""
    return lambda x, labels, arg: fn(x)


for _name, _unary_fn in {"l2norm": ops.l2_normalize, "batchnorm": ops.batch_standardize,
                         "samplenorm": ops.sample_standardize, "attention": ops.attention_map,
                         "gram": ops.gram_matrix, "batch_relation": ops.batch_relation,
                         "channel_relation": ops.channel_relation, "pool": ops.global_pool}.items():
    transform(_name)(_unary(_unary_fn))

for _name, _fn in {"kl": ops.kl_distance, "l1": ops.l1_distance, "l2": ops.l2_distance,
                   "smooth_l1": ops.smooth_l1_distance, "cosine": ops.cosine_distance,
                   "pearson": ops.pearson_distance}.items():
    DISTANCES.register(_name)(_fn)


def parse_op(text: str) -> tuple[str, float | None]:
    """'softmax:4' -> ('softmax', 4.0), 'l2norm' -> ('l2norm', None); a ValueError naming what is wrong."""
    name, _, arg = text.partition(":")
    entry: Transform = TRANSFORMS.lookup(name)
    if entry.arg_choices and not arg:
        raise ValueError(f"transform {name!r} takes an argument: write it as {name}:<number>, e.g. "
                         f"{name}:{entry.arg_choices[0]:g}")
    if not entry.arg_choices and arg:
        raise ValueError(f"transform {name!r} takes no argument; write {name!r}")
    if not arg:
        return name, None
    try:
        value = float(arg)
    except ValueError:
        raise ValueError(f"transform {text!r}: the argument after ':' must be a number") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"transform {text!r}: the argument must be a positive finite number")
    return name, value


def apply_transforms(x: Tensor, labels: Tensor, transforms: list[str]) -> Tensor:
    """The transforms applied left to right."""
    for text in transforms:
        name, arg = parse_op(text)
        x = TRANSFORMS[name].fn(x, labels, arg)
    return x


def distiller_loss(student: Tensor, teacher: Tensor, labels: Tensor, transforms: list[str], distance: str) -> Tensor:
    """D(T(K_s), T(K_t)): one branch of a distiller, unweighted (KD-Zero Sec. 3.1)."""
    return DISTANCES[distance](apply_transforms(student, labels, transforms),
                               apply_transforms(teacher, labels, transforms))
