"""Set-up checks of the models against the data: each model is called once on two training samples, so inputs it
refuses, outputs that hold no logits and teacher/student class counts that differ are one line before any
training, not a traceback at the first step."""
from __future__ import annotations

import torch
from torch import nn

from kdforge.data.types import Batch, Split, logits_of
from kdforge.errors import ConfigError

PROBE_SAMPLES = 2


def check_models(student: nn.Module, teacher: nn.Module | None, train: Split, num_classes: int,
                 names: tuple[str, str] = ("student", "teacher")) -> int:
    """The number of classes both models give per sample, after checking that each takes the data's inputs and
    returns [batch, classes] logits, that teacher and student agree, and that the labels (up to `num_classes` - 1)
    fit. `names` are how the models are called in the errors (config keys in a config run). A graph is not
    probed: its batch is the whole graph, and its models are built from the data's spec."""
    if train.graph is not None:
        return num_classes
    probe = train.batch(torch.arange(min(PROBE_SAMPLES, len(train))), split="train")
    width = output_width(student, names[0], probe)
    if teacher is not None:
        other = output_width(teacher, names[1], probe)
        if other != width:
            raise ConfigError(f"{names[1]} ({type(teacher).__name__}) gives {other} classes per sample and "
                              f"{names[0]} ({type(student).__name__}) {width}; both must give the same classes")
    if width < num_classes:
        raise ConfigError(f"the labels run to class {num_classes - 1} but {names[0]} ({type(student).__name__}) "
                          f"gives {width} classes per sample; give the models one output per class")
    return width


@torch.no_grad()
def output_width(model: nn.Module, name: str, probe: Batch) -> int:
    """How many classes `model` gives per sample, from one forward on `probe` in eval mode (BatchNorm statistics
    and dropout untouched; the model's mode is restored); ConfigError naming the model and the inputs on failure."""
    param = next(model.parameters(), None)
    batch = probe if param is None else probe.to(param.device)
    was_training = model.training
    model.eval()
    try:
        out = batch.call(model)
    except Exception as e:  # whatever the model raises on these inputs becomes one line naming them
        message = (str(e).strip().splitlines() or [""])[0][:300]
        inputs = ", ".join(f"{k} {list(v)}" for k, v in probe.input_shapes.items())
        raise ConfigError(f"{name} ({type(model).__name__}) refused a batch of {len(probe)} training samples "
                          f"({inputs}): {type(e).__name__}: {message}") from None
    finally:
        model.train(was_training)
    try:
        logits = logits_of(out, probe.calling.output_key)
    except ValueError as e:
        raise ConfigError(f"{name} ({type(model).__name__}): {e}") from None
    if logits.dim() != 2 or logits.shape[0] != len(probe):
        raise ConfigError(f"{name} ({type(model).__name__}) returned logits of shape {list(logits.shape)} for "
                          f"{len(probe)} samples; kdforge distills one prediction per sample: [batch, classes]")
    return int(logits.shape[1])
