"""Convert RepDistiller / mdistiller CIFAR checkpoints into kdforge model folders (model.safetensors + model.json).

    python -m kdforge.models.convert save/models/resnet32x4_vanilla/ckpt_epoch_240.pth runs/teachers/rd-resnet32x4
    kdforge distill configs/cifar100_kd_resnet32x4_resnet8x4.yaml teacher.checkpoint=runs/teachers/rd-resnet32x4

Inputs. HobbitLong/RepDistiller@b84f547 train_teacher.py saves {'epoch', 'model': state_dict, 'accuracy',
'optimizer'} every 40 epochs as save/models/<name>_vanilla/ckpt_epoch_<e>.pth (the released teachers are
ckpt_epoch_240.pth); megvii-research/mdistiller@a08d46f ships the same files as
download_ckpts/cifar_teachers/<name>_vanilla/ckpt_epoch_240.pth and saves its students as {'model': state_dict}.
The model name is read from a `<name>_vanilla` folder as RepDistiller's `get_teacher_name` does
(train_student.py), or given.
Files are read with `torch.load(weights_only=True)` only: RepDistiller's `<model>_last.pth`, which also pickles the
argparse options, is refused (convert ckpt_epoch_240.pth instead). DataParallel's `module.` prefix is removed.

Mapping. kdforge's CIFAR zoo was written with the official module names; instantiating the official definitions
(RepDistiller models/{resnet,wrn,vgg,mobilenetv2,ShuffleNetv1,ShuffleNetv2}.py; mdistiller's copies in
mdistiller/models/cifar/ are the same) gives the same parameter and buffer names, shapes and order as kdforge's
resnet8/14/20/32/44/56/110, resnet8x4, resnet32x4, wrn_16_2, wrn_40_1, wrn_40_2, vgg8 and vgg13 (official
vgg8_bn, vgg13_bn), mobile_half (MobileNetV2), shufflenetv1 (ShuffleV1) and shufflenetv2 (ShuffleV2), and the same
logits on 32x32 inputs. So keys map one to one, and shapes are checked. The architectures differ only outside the
state dict:
  - resnet*: the official `relu` and `avgpool = AvgPool2d(8)` modules are a functional ReLU and `pool =
    AdaptiveAvgPool2d(1)` here (equal on 32x32 inputs, whose last stage is 8x8); each block has an Identity
    `preact` (a tap point for the pre-ReLU sum, which the official code returns from the last block of a stage).
  - wrn_*: the official `relu`/`relu1`/`relu2` modules are functional; avg_pool2d(8) is `pool` (adaptive).
  - vgg*: the official pool0..pool3 MaxPool2d modules are F.max_pool2d calls and pool4 is `pool`; the official
    code max-pools after block3 only when the input height equals 64, kdforge when it is at least 64.
  - mobile_half, shufflenet*: see the deviations in models/mobilenetv2.py and models/shufflenet.py (global pools
    made adaptive, the stem takes the spec's channels).
Refused, one line each: RepDistiller's ResNet50 / mdistiller's ResNet18 (models/resnetv2.py, ImageNet-style
bottleneck ResNets for CIFAR), wrn_16_1, vgg11/16/19: kdforge has no such model.
BatchNorm `num_batches_tracked` buffers absent from files written by PyTorch < 0.4.1 (RepDistiller's README: tested
with 0.4.0) are set to 0: they only count batches, and with momentum 0.1 change no output.

Inputs to the converted model: RepDistiller and mdistiller normalize CIFAR-100 with fixed constants, mean (0.5071,
0.4867, 0.4408) and std (0.2675, 0.2565, 0.2761) (dataset/cifar100.py); kdforge's cifar100 source with the
statistics of the train split it reads, which these constants approximate (to about 1e-3; not checked here, as the
data snapshot has no CIFAR-100).
"""
from __future__ import annotations

import argparse
import pickle
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdforge.models.build import ModelSpec, build
from kdforge.data.types import DataSpec
from kdforge.errors import CheckpointError, ConfigError, KdforgeError
from kdforge.fileio import sha256_of
from kdforge.models.io import META, save_model

# The official name of a model where it differs from kdforge's.
OFFICIAL_NAMES = {"MobileNetV2": "mobile_half", "ShuffleV1": "shufflenetv1", "ShuffleV2": "shufflenetv2",
                  "vgg8_bn": "vgg8", "vgg13_bn": "vgg13"}
CONVERTIBLE = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
               "resnet32x4", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg13", "mobile_half", "shufflenetv1",
               "shufflenetv2")
INPUT_SHAPE = (3, 32, 32)
DATA_BY_CLASSES = {100: "cifar100", 10: "cifar10"}


def convert_checkpoint(path: str | Path, out: str | Path, model: str | None = None, data: str | None = None,
                       overwrite: bool = False) -> Path:
    """Write the RepDistiller/mdistiller checkpoint at `path` as a kdforge model folder `out`; returns `out`.

    `model`: the official or kdforge model name (default: from the folder name, `<name>_vanilla`). `data`: the data
    set name the model is for (default: cifar100 for 100 classes, cifar10 for 10), which `kdforge` compares with
    the data of a run that uses the folder as its teacher.
    """
    path, out = Path(path), Path(out)
    if (out / META).exists() and not overwrite:
        raise CheckpointError(f"{out} already holds a saved model; choose another folder or pass overwrite "
                              "(--overwrite)")
    name = kdforge_name(model if model is not None else name_from_path(path))
    state, info = _state_and_info(load_checkpoint(path), path)
    classifier = _classifier_key(name)
    num_classes = int(state[classifier].shape[0]) if classifier in state else 100  # a missing key is named below
    if data is None and (data := DATA_BY_CLASSES.get(num_classes)) is None:
        raise ConfigError(f"{path}: a {num_classes}-class model; give the data set it was trained on (data / --data)")
    spec, cfg = DataSpec(data, INPUT_SHAPE, num_classes), ModelSpec(name=name)
    module = build(cfg, spec)
    state, filled = map_state(state, module.state_dict(), name, path)
    module.load_state_dict(state, strict=True)
    extra = {"converted_from": {"file": str(path), "sha256": sha256_of(path), "model": name, **info,
                                "num_batches_tracked_filled": filled}}
    return save_model(out, module, cfg, spec, extra=extra)


def name_from_path(path: Path) -> str:
    """The model of a `<name>_vanilla/` folder, parsed as RepDistiller's `get_teacher_name` does: the first
    `_`-separated part (the first three for wrn). Other folders are not guessed from."""
    folder = path.resolve().parent.name
    if not folder.endswith("_vanilla"):
        raise ConfigError(f"{path}: cannot tell the model from the folder name {folder!r} (RepDistiller and "
                          "mdistiller keep teachers in <name>_vanilla/); give the model name (model / --model)")
    parts = folder.split("_")
    return "_".join(parts[:3]) if parts[0] == "wrn" else parts[0]


def kdforge_name(name: str) -> str:
    """kdforge's name of the official model `name`; a ConfigError for models kdforge does not have."""
    kdforge = OFFICIAL_NAMES.get(name, name)
    if kdforge not in CONVERTIBLE:
        raise ConfigError(f"model {name!r} has no kdforge counterpart to convert to; convertible: "
                          f"{', '.join(CONVERTIBLE)} (official names {', '.join(OFFICIAL_NAMES)} too)")
    return kdforge


def load_checkpoint(path: Path) -> Any:
    """The unpickled file, tensors on the CPU, with torch's weights-only unpickler (no arbitrary code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no such checkpoint file") from e
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"it pickles {found.group(1)}" if found else str(e).splitlines()[0]
        raise CheckpointError(f"{path}: refused by torch.load(weights_only=True): {what}; convert a file that holds "
                              "only tensors and plain values (RepDistiller's ckpt_epoch_*.pth, not *_last.pth), or "
                              "re-save the weights with torch.save({'model': model.state_dict()}, file)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({str(e).splitlines()[0]})") from e


def _state_and_info(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state dict ({'model': ...}, {'state_dict': ...} or the bare dict), without DataParallel's `module.`
    prefix, and the checkpoint's epoch / accuracy as plain numbers."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, expected a dict")
    inner = next((obj[k] for k in ("model", "state_dict") if isinstance(obj.get(k), dict)), obj)
    if bad := [k for k, v in inner.items() if not isinstance(v, Tensor)]:
        keys = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(f"{path}: no state dict found ({bad[0]!r} is not a tensor); top-level keys: {keys}")
    state = dict(inner)
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    info: dict[str, Any] = {}
    for key in ("epoch", "accuracy", "best_acc") if inner is not obj else ():
        value = obj.get(key)
        if isinstance(value, Tensor) and value.numel() == 1:
            info[key] = float(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            info[key] = value
    return state, info


def _classifier_key(name: str) -> str:
    """The weight of the model's last Linear layer, whose rows are the classes."""
    probe = build(ModelSpec(name=name), DataSpec("probe", INPUT_SHAPE, 2))
    return [n for n, m in probe.named_modules() if isinstance(m, nn.Linear)][-1] + ".weight"


def map_state(state: dict[str, Tensor], expected: dict[str, Tensor], name: str,
              path: Path) -> tuple[dict[str, Tensor], int]:
    """`state` renamed and checked against kdforge's `expected` state dict (names map one to one, see the module
    docstring); missing `num_batches_tracked` buffers are set to 0. Returns the state and how many were filled."""
    state = dict(state)
    filled = 0
    for key in expected:
        if key.endswith(".num_batches_tracked") and key not in state and \
                key.removesuffix("num_batches_tracked") + "running_mean" in state:
            state[key], filled = torch.zeros((), dtype=torch.long), filled + 1
    missing = [k for k in expected if k not in state]
    unknown = [k for k in state if k not in expected]
    if missing or unknown:
        found = "; ".join(f"{len(keys)} {what} (first: {keys[0]})" for keys, what in (
            (missing, f"keys of kdforge's {name} missing"), (unknown, f"keys unknown to kdforge's {name}")) if keys)
        raise CheckpointError(f"{path}: not a {name} state dict: {found}; if the model is another, give its name")
    for key, want in expected.items():
        if state[key].shape != want.shape:
            raise CheckpointError(f"{path}: {key} has shape {tuple(state[key].shape)}, kdforge's {name} expects "
                                  f"{tuple(want.shape)}")
        state[key] = state[key].to(want.dtype)
    return state, filled


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdforge.models.convert", description=(
        "Convert a RepDistiller/mdistiller CIFAR checkpoint (.pth) into a kdforge model folder."))
    parser.add_argument("checkpoint", help="e.g. save/models/resnet32x4_vanilla/ckpt_epoch_240.pth")
    parser.add_argument("out", help="the kdforge model folder to write (model.safetensors + model.json)")
    parser.add_argument("--model", help="official or kdforge model name (default: from <name>_vanilla)")
    parser.add_argument("--data", help="data set name (default: cifar100 for 100 classes, cifar10 for 10)")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already saved in OUT")
    args = parser.parse_args(argv)
    try:
        out = convert_checkpoint(args.checkpoint, args.out, args.model, args.data, args.overwrite)
    except KdforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
