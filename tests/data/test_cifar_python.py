"""CIFAR-10 / CIFAR-100 in the official python layout: decoding, labels, md5 checks, structure checks, safe unpickling."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import cifar_files as cf
from kdforge.data.sources import cifar10, cifar_python
from kdforge.data.sources.cifar_python import CIFAR10, CIFAR100
from kdforge.errors import DataError
from kdforge.registry import DATASETS


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


def test_fake_members_are_written_as_python2_did() -> None:
    data = cf.cifar10_members()["data_batch_1"]
    assert data[:2] == b"\x80\x02" and b"cnumpy.core.multiarray\n_reconstruct\n" in data
    assert b"_codecs" not in data and pickle.SHORT_BINSTRING + bytes([4]) + b"data" in data


def test_cifar10_tarball_pixels_and_labels(tmp_path: Path) -> None:
    """Row r of `data` is image r in CHW order (1024 red, 1024 green, 1024 blue values, row-major); the train
    split is data_batch_1..5 in order, the labels are the `labels` lists."""
    archive = cf.write_tarball(tmp_path, CIFAR10, cf.cifar10_members(per_batch=2, test=3))
    train, test, num_classes = cifar_python.read_splits(archive, CIFAR10, "cifar10", verify=False)
    assert num_classes == 10 and train.x.dtype == torch.uint8 and train.x.shape == (10, 3, 32, 32)
    for i in range(10):
        assert torch.equal(train.x[i], torch.from_numpy(cf.image(i)))
    assert train.y.tolist() == list(range(10))
    assert [int(test.x[k, 1, 2, 3]) for k in range(3)] == [int(cf.image(1000 + k)[1, 2, 3]) for k in range(3)]
    assert test.y.tolist() == [0, 1, 2]
    assert int(train.x[3, 2, 5, 7]) == (3 * 7 + 2 * 50 + 5 + 2 * 7) % 256  # channel 2, row 5, column 7, by hand


def test_extracted_folder_reads_the_same_as_the_tarball(tmp_path: Path) -> None:
    members = cf.cifar10_members()
    archive = cf.write_tarball(tmp_path / "a", CIFAR10, members)
    folder = cf.write_folder(tmp_path / "b", CIFAR10, members)
    from_tar, from_dir = (cifar_python.read_splits(p, CIFAR10, "cifar10", False) for p in (archive, folder))
    assert all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip(from_tar[:2], from_dir[:2]))


def test_cifar10_format_is_detected_from_the_data_folder(tmp_path: Path) -> None:
    cf.write_tarball(tmp_path / "cifar10", CIFAR10, cf.cifar10_members())  # the subfolder is looked in too
    spec, train, test = DATASETS["cifar10"](tmp_path, {"verify": False})
    assert spec.name == "cifar10" and spec.num_classes == 10 and len(train) == 10 and len(test) == 3
    assert train.x.dtype == torch.float32 and abs(float(train.x.mean())) < 1e-5  # normalized by `finish`

    (tmp_path / cifar10.ARCHIVE).parent.mkdir()
    (tmp_path / cifar10.ARCHIVE).write_bytes(b"PK")  # the JPEG zip too: auto cannot choose
    with pytest.raises(DataError, match=r"holds both .*set data.params.format to python"):
        DATASETS["cifar10"](tmp_path, {"verify": False})
    spec, train, _ = DATASETS["cifar10"](tmp_path, {"verify": False, "format": "python"})
    assert len(train) == 10
    with pytest.raises(DataError, match="not a readable zip"):
        DATASETS["cifar10"](tmp_path, {"format": "jpeg"})


def test_cifar10_python_missing_names_every_place(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing data file: none of .*cifar-10-batches-py.*cifar-10-python.tar.gz"):
        DATASETS["cifar10"](tmp_path, {"format": "python"})


@pytest.mark.parametrize(("labels", "num_classes", "expected"), [("fine", 100, cf.fine), ("coarse", 20, cf.coarse)])
def test_cifar100_fine_and_coarse_labels(tmp_path: Path, labels: str, num_classes: int, expected) -> None:
    cf.write_tarball(tmp_path, CIFAR100, cf.cifar100_members(train=10, test=4))
    spec, train, test = DATASETS["cifar100"](tmp_path, {"labels": labels, "verify": False})
    assert spec.name == "cifar100" and spec.num_classes == num_classes and spec.input_shape == (3, 32, 32)
    assert train.y.tolist() == [expected(i) for i in range(10)]
    assert test.y.tolist() == [expected(i) for i in range(1000, 1004)]


def test_non_official_tarball_is_refused_before_unpickling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = cf.write_tarball(tmp_path, CIFAR100, cf.cifar100_members())
    monkeypatch.setattr(cifar_python, "load_restricted", lambda *a, **k: pytest.fail("unpickled an unchecked file"))
    with pytest.raises(DataError) as e:
        DATASETS["cifar100"](tmp_path, {})
    message = _one_line(e)
    assert message.startswith(f"{archive}: md5 {_md5(archive.read_bytes())} is not that of the official "
                              "cifar-100-python.tar.gz (eb9058c3a382ffc7106e4002c42a8d85)")
    assert "data.params.verify=false" in message


def test_verify_false_reads_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    archive = cf.write_tarball(tmp_path, CIFAR100, cf.cifar100_members())
    with caplog.at_level(logging.WARNING):
        DATASETS["cifar100"](tmp_path, {"verify": False})
    assert f"{archive}: not checked against the official md5s" in caplog.text


def test_official_md5s_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    caplog: pytest.LogCaptureFixture) -> None:
    """With the pinned md5s set to those of the fake files, verify=True reads them (tarball and folder)."""
    members = cf.cifar100_members()
    archive = cf.write_tarball(tmp_path / "tar", CIFAR100, members)
    pinned = dataclasses.replace(CIFAR100, archive_md5=_md5(archive.read_bytes()),
                                 member_md5={name: _md5(data) for name, data in members.items()})
    monkeypatch.setattr(cifar_python, "CIFAR100", pinned)
    with caplog.at_level(logging.WARNING):
        assert DATASETS["cifar100"](tmp_path / "tar", {})[0].num_classes == 100
        folder = cf.write_folder(tmp_path / "dir", CIFAR100, members)
        assert len(DATASETS["cifar100"](tmp_path / "dir", {})[1]) == 10
    assert not caplog.text
    (folder / "test").write_bytes(cf.cifar100_members(test=5)["test"])  # one member changed
    with pytest.raises(DataError, match=rf"^{folder / 'test'}: md5 \w+ is not that of the official cifar-100-python/test"):
        DATASETS["cifar100"](tmp_path / "dir", {})


def _bad_train(data: np.ndarray | None = None, **labels: object) -> bytes:
    obj = {b"data": np.zeros((2, 3072), np.uint8) if data is None else data,
           b"fine_labels": [1, 2], b"coarse_labels": [0, 0]}
    obj.update({k.encode(): v for k, v in labels.items()})
    return cf.py2_pickle(obj)


@pytest.mark.parametrize(("member", "content", "match"), [
    ("train", _bad_train(np.zeros((2, 3000), np.uint8)), r"data is a uint8 array \(2, 3000\), expected a uint8 array"),
    ("train", _bad_train(np.zeros((2, 3072), np.float32)), r"data is a float32 array"),
    ("train", _bad_train(fine_labels=[1, 100]), r"fine_labels has labels outside 0-99"),
    ("train", _bad_train(fine_labels=[1]), r"fine_labels should be 2 integers"),
    ("train", cf.py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}), r"no key 'fine_labels'"),
    ("train", cf.py2_pickle([1, 2, 3]), r"holds a list, expected a dict"),
    ("meta", cf.py2_pickle({b"fine_label_names": [b"a"] * 99}), r"fine_label_names should list 100 class names"),
    ("test", None, r"no member cifar-100-python/test"),
])
def test_structure_is_checked(tmp_path: Path, member: str, content: bytes | None, match: str) -> None:
    members = cf.cifar100_members()
    if content is None:
        del members[member]
    else:
        members[member] = content
    archive = cf.write_tarball(tmp_path, CIFAR100, members)
    with pytest.raises(DataError, match=match) as e:
        DATASETS["cifar100"](tmp_path, {"verify": False})
    assert _one_line(e).startswith(str(archive))


def test_a_damaged_tarball_is_a_data_error(tmp_path: Path) -> None:
    archive = cf.write_tarball(tmp_path, CIFAR10, cf.cifar10_members())
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DataError, match=r"not a readable tar archive"):
        DATASETS["cifar10"](tmp_path, {"format": "python", "verify": False})


class _Evil:
    """Unpickling this calls open(path, "w"): a file appears if the unpickler resolves the global."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return open, (str(self.path), "w")


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    members = cf.cifar10_members()
    members["data_batch_1"] = pickle.dumps({"data": _Evil(marker), "labels": []}, protocol=2)
    archive = cf.write_tarball(tmp_path, CIFAR10, members)
    with pytest.raises(DataError, match=r"global (io|builtins)\.open is not allowed") as e:
        DATASETS["cifar10"](tmp_path, {"verify": False})
    assert _one_line(e).startswith(f"{archive}/cifar-10-batches-py/data_batch_1: not a plain pickle")
    assert not marker.exists()


def test_members_are_read_in_memory_not_extracted(tmp_path: Path) -> None:
    archive = cf.write_tarball(tmp_path, CIFAR10, cf.cifar10_members())
    before = sorted(tmp_path.rglob("*"))
    cifar_python.read_splits(archive, CIFAR10, "cifar10", verify=False)
    assert sorted(tmp_path.rglob("*")) == before
