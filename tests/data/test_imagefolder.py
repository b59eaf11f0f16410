"""The ImageFolder source: class order, file order, decoding and resizing, the two split layouts, refusals."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import kdforge.data as data
from kdforge.api import build_data
from kdforge.config.schema import DataConfig
from kdforge.data.sources import imagefolder
from kdforge.data.sources.imagefolder import ImageFolderParams
from kdforge.errors import ConfigError, DataError
from kdforge.registry import DATASETS

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
COLOURS = {"dog": RED, "ant": GREEN, "cat": BLUE}  # out of order on purpose: classes are numbered by sorted name


def _save(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (12, 10), fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def _folder(root: Path, per_class: int = 2) -> Path:
    for name, colour in COLOURS.items():
        for i in range(per_class):
            _save(root / name / f"{i}.png", colour)
        _save(root / name / "extra.JPEG", colour, fmt="JPEG")  # upper-case extensions count, as in torchvision
        (root / name / "notes.txt").write_text("not an image")  # other extensions are skipped
        (root / name / "._0.png").write_bytes(b"macOS fork")  # hidden files are skipped
    (root / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    return root


def _params(**kw: object) -> ImageFolderParams:
    return ImageFolderParams.model_validate({"size": 8, **kw})


def test_classes_are_sorted_and_images_decoded(tmp_path: Path) -> None:
    classes, split = imagefolder.read_split(_folder(tmp_path), _params())
    assert classes == ["ant", "cat", "dog"]
    assert split.x.shape == (9, 3, 8, 8) and split.x.dtype == torch.uint8
    assert split.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for x, y in zip(split.x, split.y):
        colour = torch.tensor(COLOURS[classes[y]], dtype=torch.float32)
        assert (x.float().mean((1, 2)) - colour).abs().max() < 3  # PNG exact, JPEG nearly
    assert torch.equal(split.x[1], torch.tensor(GREEN, dtype=torch.uint8)[:, None, None].expand(3, 8, 8))


def test_files_follow_torchvision_order(tmp_path: Path) -> None:
    """sorted(os.walk(class)) then sorted names: a class folder's own files come before its subfolders' files."""
    _save(tmp_path / "a" / "z.png", RED)
    _save(tmp_path / "a" / "b" / "y.png", BLUE)
    _save(tmp_path / "a" / "A.png", GREEN)
    _, split = imagefolder.read_split(tmp_path, _params(size=1))
    assert split.x[:, :, 0, 0].tolist() == [list(GREEN), list(RED), list(BLUE)]


def test_center_crop_stretch_grey_and_rectangular_sizes(tmp_path: Path) -> None:
    image = Image.new("RGB", (96, 32), RED)  # three 32x32 squares: red, green, blue
    image.paste(GREEN, (32, 0, 64, 32))
    image.paste(BLUE, (64, 0, 96, 32))
    image.save(tmp_path / "stripes.png")
    path = tmp_path / "stripes.png"
    cropped = imagefolder.decode(path, (16, 16), "center_crop", "rgb")
    assert (cropped[:, 1:-1] == GREEN).all()  # the middle square, scaled by 1/2 (its edge columns blend bilinearly)
    stretched = imagefolder.decode(path, (16, 16), "stretch", "rgb")
    assert tuple(stretched[8, 0]) == RED and tuple(stretched[8, 8]) == GREEN and tuple(stretched[8, 15]) == BLUE
    assert imagefolder.decode(path, (4, 6), "stretch", "grey").shape == (4, 6, 1)
    assert imagefolder.decode(path, (32, 96), "center_crop", "rgb").shape == (32, 96, 3)


def test_registered_source_with_a_test_fraction(tmp_path: Path) -> None:
    _folder(tmp_path / "pets", per_class=3)
    spec, train, test = DATASETS["imagefolder"](tmp_path, {"path": "pets", "size": [6, 8], "test_fraction": 0.25})
    assert spec.name == "imagefolder" and spec.input_shape == (3, 6, 8) and spec.num_classes == 3
    assert len(train) == 9 and len(test) == 3 and sorted(test.y.tolist()) == [0, 1, 2]  # stratified
    bundle = build_data(DataConfig(name="imagefolder", root=str(tmp_path / "pets"), val_fraction=0,
                                   params={"size": 8, "mode": "grey"}))
    assert bundle.spec.input_shape == (1, 8, 8) and len(bundle.train) + len(bundle.test) == 12


@pytest.mark.parametrize("test_name", ["test", "val"])
def test_train_and_test_folders(tmp_path: Path, test_name: str) -> None:
    for name, colour in COLOURS.items():
        _save(tmp_path / "train" / name / "0.png", colour)
        _save(tmp_path / "train" / name / "1.png", colour)
    _save(tmp_path / test_name / "dog" / "0.png", RED)  # a test split may lack classes
    spec, train, test = DATASETS["imagefolder"](tmp_path, {"size": 4})
    assert spec.num_classes == 3 and len(train) == 6 and test.y.tolist() == [2]  # dog is class 2 of the train split
    with pytest.raises(ConfigError, match=r"^data.params.test_fraction: .* has train/ and \w+/ folders"):
        DATASETS["imagefolder"](tmp_path, {"size": 4, "test_fraction": 0.5})
    _save(tmp_path / test_name / "zebra" / "0.png", RED)
    with pytest.raises(DataError, match=r"zebra: a test class the train folder does not have"):
        DATASETS["imagefolder"](tmp_path, {"size": 4})


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_an_unreadable_image_is_one_data_error_line_naming_it(tmp_path: Path, content: bytes | str) -> None:
    _folder(tmp_path)
    bad = tmp_path / "cat" / "bad.png"
    if content == "truncated":
        whole = _save(tmp_path / "whole.png", RED, size=(64, 64)).read_bytes()
        bad.write_bytes(whole[: len(whole) // 2])
    else:
        bad.write_bytes(content)
    with pytest.raises(DataError) as e:
        DATASETS["imagefolder"](tmp_path, {"size": 8})
    assert str(e.value).startswith(f"{bad}: not a readable image (") and "\n" not in str(e.value)


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"image folder .*nowhere does not exist; set data.params.path"):
        DATASETS["imagefolder"](tmp_path, {"path": "nowhere"})
    with pytest.raises(DataError, match=r"no class folders"):
        DATASETS["imagefolder"](tmp_path, {})
    _folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no image files"):
        DATASETS["imagefolder"](tmp_path, {})
