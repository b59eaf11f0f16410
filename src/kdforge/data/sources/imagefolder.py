"""Images in torchvision's ImageFolder layout: <folder>/<class>/<image files>, decoded to one fixed size.

Classes are the sorted names of the class folders; each class's images are the image files below its folder in
`sorted(os.walk(...))` order, then sorted file names, as torchvision's ImageFolder lists them
(pytorch/vision@0773175 torchvision/datasets/folder.py: `_find_classes`, `make_dataset`, `IMG_EXTENSIONS`). The test
split is the `test/` (else `val/`) folder when the folder holds `train/` beside it, otherwise a stratified
`test_fraction` of each class drawn from `seed`. Every image is decoded with Pillow, converted to RGB (or grey),
resized and held in memory as uint8, like the other sources; they are decoded again on every load (no cache).

Deviations from torchvision: names starting with "." (hidden folders such as .ipynb_checkpoints, macOS `._x.jpg`
forks) are skipped; test classes are numbered by the train split's classes (a test class folder that train lacks
is an error, not a silent relabelling); a class folder without images (torchvision lists the class with no
samples) and an unreadable image file are DataErrors naming them; `.webp` is matched with its dot (the extension
list there has 'webp').
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field, PositiveInt
from rich.progress import track

from kdforge.data.sources.base import Loaded, SourceParams, finish, register
from kdforge.data.splits import stratified_split, take
from kdforge.data.types import Split
from kdforge.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# torchvision.datasets.folder.IMG_EXTENSIONS, compared in lower case as torchvision does.
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_TEST_FRACTION = 0.2


class ImageFolderParams(SourceParams):
    path: str = Field(".", description="the image folder, relative to the data folder (data.root) or absolute")
    size: PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] = Field(
        32, description="output side in pixels, or [height, width]")
    resize: Literal["center_crop", "stretch"] = Field("center_crop", description=(
        "center_crop: scale the shorter side to fit, then crop the middle (torchvision's Resize + CenterCrop); "
        "stretch: scale each side to the size"))
    mode: Literal["rgb", "grey"] = Field("rgb", description="3 colour channels or 1 grey channel")
    test_fraction: float | None = Field(None, gt=0, lt=1, description=(
        f"without train/ and test/ folders: the share of each class held out for test (default "
        f"{DEFAULT_TEST_FRACTION})"))
    seed: int = Field(0, description="seed of the test_fraction split")


@register("imagefolder", params=ImageFolderParams)
def load(root: Path | None, params: ImageFolderParams) -> Loaded:
    """[C, H, W] images of the given size, one class per subfolder (sorted names), train and test splits."""
    assert root is not None, "imagefolder needs the data folder"
    folder = root / params.path
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist; set data.params.path (relative to data.root) to "
                        "a folder of <class>/<image> files")
    test_dir = next((folder / n for n in ("test", "val") if (folder / n).is_dir()), None)
    if (folder / "train").is_dir() and test_dir is not None:
        if params.test_fraction is not None:
            raise ConfigError(f"data.params.test_fraction: {folder} has train/ and {test_dir.name}/ folders, which "
                              "give the test split; remove test_fraction")
        classes, train = read_split(folder / "train", params)
        _, test = read_split(test_dir, params, classes)
    else:
        classes, both = read_split(folder, params)
        fraction = DEFAULT_TEST_FRACTION if params.test_fraction is None else params.test_fraction
        kept, held = stratified_split(both.y, fraction, params.seed)
        train, test = take(both, kept), take(both, held)
    log.info("image folder %s: %d classes (%s), %d train / %d test images", folder, len(classes),
             ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else ""), len(train), len(test))
    return finish("imagefolder", train, test, num_classes=len(classes))


def read_split(folder: Path, params: ImageFolderParams, classes: list[str] | None = None) -> tuple[list[str], Split]:
    """The classes (found here, or `classes` given) and every image below `folder` as uint8 [N, C, H, W] + labels."""
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
    elif extra := sorted(set(found) - set(classes)):
        raise DataError(f"{folder / extra[0]}: a test class the train folder does not have; the test classes must "
                        "be train classes")
    if not found:
        raise DataError(f"{folder}: no class folders; expected <class>/<image files> below it")
    files = [(path, i) for i, name in enumerate(classes) if name in found for path in _images(folder / name)]
    height, width = (params.size, params.size) if isinstance(params.size, int) else params.size
    channels = 3 if params.mode == "rgb" else 1
    pixels = np.empty((len(files), height, width, channels), dtype=np.uint8)
    for k, (path, _) in enumerate(track(files, description=f"decoding {folder}", transient=True)):
        pixels[k] = decode(path, (height, width), params.resize, params.mode)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    return classes, Split(x, torch.tensor([label for _, label in files], dtype=torch.int64))


def _images(class_dir: Path) -> list[Path]:
    """The image files below `class_dir`, in torchvision's order; a class without any is an error."""
    files = [Path(walked) / name
             for walked, _, names in sorted(os.walk(class_dir))
             if not any(part.startswith(".") for part in Path(walked).relative_to(class_dir).parts)
             for name in sorted(names) if name.lower().endswith(EXTENSIONS) and not name.startswith(".")]
    if not files:
        raise DataError(f"{class_dir}: no image files ({', '.join(EXTENSIONS)}); remove the folder or add images")
    return files


def decode(path: Path, size: tuple[int, int], resize: str, mode: str) -> np.ndarray:
    """The image at `path` as uint8 [H, W, C] of `size` = (H, W); a file Pillow cannot read is a DataError."""
    try:
        with Image.open(path) as opened:
            image = fit(opened.convert("RGB" if mode == "rgb" else "L"), size, resize)
            array = np.asarray(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable image ({e}); remove or replace the file") from e
    return array if array.ndim == 3 else array[:, :, None]


def fit(image: Image.Image, size: tuple[int, int], resize: str) -> Image.Image:
    """Bilinear resize to `size` = (H, W): stretched, or scaled until both sides fit (the other side truncated to
    an integer, as torchvision's Resize does) and the middle cropped at CenterCrop's offsets round((side - crop) / 2)."""
    height, width = size
    if image.size == (width, height):
        return image
    if resize == "stretch":
        return image.resize((width, height), Image.Resampling.BILINEAR)
    scale = max(height / image.height, width / image.width)
    new_w, new_h = max(width, int(image.width * scale)), max(height, int(image.height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = round((new_w - width) / 2), round((new_h - height) / 2)
    return image.crop((left, top, left + width, top + height))
