"""Bad inputs, as a new user makes them. Each case: exit code 2, one line `error: ...` naming the key or file,
no traceback, and nothing already written is modified (the run folders are hashed before and after)."""
from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from kdforge.cli import main
from kdforge.demo import preset
from support import tree_digest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
FAST = ["train.epochs=1", "teacher.recipe.train.epochs=1", "train.progress=false",
        "teacher.recipe.train.progress=false"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """An earlier run (digits, KD) and its teacher, which no bad input may touch."""
    root = tmp_path_factory.mktemp("world")
    config = root / "exp.yaml"
    config.write_text(yaml.safe_dump(preset()))
    teachers, run = root / "teachers", root / "earlier"
    assert main(["distill", str(config), f"output_dir={run}", f"teacher.store_dir={teachers}", *FAST]) == 0
    return {"root": root, "config": config, "teachers": teachers, "run": run,
            "teacher": next(teachers.iterdir()), "student": run / "student"}


def _cli(world, *overrides: str) -> list[str]:
    return ["distill", str(world["config"]), f"teacher.store_dir={world['teachers']}", *FAST, *overrides]


def _copy_run(world, tmp: Path) -> Path:
    copy = tmp / "copy"
    shutil.copytree(world["run"], copy)
    return copy


def _file(tmp: Path, name: str, data: bytes | str) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def _fashion_root(tmp: Path, damage: Callable[[Path], None]) -> Path:
    """A data root holding a copy of Fashion-MNIST (skip without the shared data), damaged by `damage`."""
    if not (SHARED / "fashion_mnist").is_dir():
        pytest.skip("shared data absent")
    shutil.copytree(SHARED / "fashion_mnist", tmp / "data" / "fashion_mnist")
    damage(tmp / "data" / "fashion_mnist")
    return tmp / "data"


def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _labels_out_of_range(folder: Path) -> None:
    raw = bytearray(gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[8] = 12
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))


def _cifar_zip(tmp: Path, member: str) -> Path:
    folder = tmp / "data" / "cifar10_jpg"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "cifar10-jpg-q75.zip", "w") as zf:
        zf.writestr(member, b"not an image")
    return tmp / "data"


def _saved_model(world, tmp: Path, meta_change: Callable[[dict], None]) -> Path:
    folder = tmp / "model"
    shutil.copytree(world["student"], folder)
    meta = json.loads((folder / "model.json").read_text())
    meta_change(meta)
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def _evil_pickle_root(tmp: Path) -> Path:
    """A data root whose MNIST-1D file is a pickle that would run `os.system` if it were ever unpickled."""
    _file(tmp, "d/mnist1d/mnist1d_data.pkl", b"cos\nsystem\n(S'touch /tmp/kdforge-pwned'\ntR.")
    return tmp / "d"


def _truncated_model(world, tmp: Path) -> Path:
    folder = _saved_model(world, tmp, lambda meta: None)
    _truncate(folder / "model.safetensors")
    return folder


def _resume(world, tmp: Path, damage: Callable[[Path], None], *overrides: str) -> list[str]:
    run = _copy_run(world, tmp)
    damage(run / "checkpoints")
    return [*_cli(world, f"output_dir={run}", *overrides), "--resume"]


def _latest_ckpt(ckpts: Path) -> Path:
    return ckpts / json.loads((ckpts / "latest.json").read_text())["checkpoint"]


def _pickled_state(ckpts: Path) -> None:
    import hashlib

    folder = _latest_ckpt(ckpts)
    torch.save({"x": Path("/")}, folder / "state.pt")  # an object weights_only refuses
    meta = json.loads((folder / "meta.json").read_text())
    meta["sha256"]["state.pt"] = hashlib.sha256((folder / "state.pt").read_bytes()).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))


# (case id, argv maker (world, tmp) -> argv, text the one line must contain)
CASES: list[tuple[str, Callable[[dict, Path], list[str]], str]] = [
    ("missing-config", lambda w, t: ["distill", str(t / "nope.yaml")], "nope.yaml does not exist"),
    ("binary-config", lambda w, t: ["distill", str(_file(t, "b.yaml", b"\xff\xfe\x00\x01"))], "not a text file"),
    ("malformed-yaml", lambda w, t: ["distill", str(_file(t, "m.yaml", "data: [unclosed"))], "not valid YAML"),
    ("top-level-list", lambda w, t: ["distill", str(_file(t, "l.yaml", "- a\n- b\n"))], "must be a mapping"),
    ("python-tag", lambda w, t: ["distill", str(_file(t, "p.yaml", "x: !!python/object/apply:os.system [ls]"))],
     "not valid YAML"),
    ("misspelled-section", lambda w, t: _cli(w, "studnet.name=mlp"), "studnet: unknown key; allowed:"),
    ("misspelled-key", lambda w, t: _cli(w, "train.epohcs=3"), "train.epohcs: unknown key"),
    ("wrong-type", lambda w, t: _cli(w, "train.epochs=many"), "train.epochs"),
    ("zero-epochs", lambda w, t: _cli(w, "train.epochs=0"), "train.epochs"),
    ("absurd-epochs", lambda w, t: _cli(w, "train.epochs=1e30"), "train.epochs"),
    ("negative-lr", lambda w, t: _cli(w, "optim.lr=-1"), "optim.lr"),
    ("inf-lr", lambda w, t: _cli(w, "optim.lr=.inf"), "optim.lr: Input should be a finite number"),
    ("inf-min-lr", lambda w, t: _cli(w, "schedule.min_lr=.inf"), "schedule.min_lr"),
    ("inf-weight-decay", lambda w, t: _cli(w, "optim.weight_decay=.inf"), "optim.weight_decay"),
    ("nan-temperature", lambda w, t: _cli(w, "method.params.temperature=.nan"), "method.params.temperature"),
    ("inf-loss-weight", lambda w, t: _cli(w, "method.params.kd_weight=.inf"), "method.params.kd_weight"),
    ("inf-mixup", lambda w, t: _cli(w, "data.augment.mixup_alpha=.inf"), "data.augment.mixup_alpha"),
    ("inf-teacher-lr", lambda w, t: _cli(w, "teacher.recipe.optim.lr=.inf"), "teacher.recipe.optim.lr"),
    ("unknown-dataset", lambda w, t: _cli(w, "data.name=imagenet"), "unknown dataset 'imagenet'"),
    ("unknown-model", lambda w, t: _cli(w, "student.name=resnet9"), "unknown model 'resnet9'"),
    ("import-path-as-method", lambda w, t: _cli(w, "method.name=os.system"), "unknown method 'os.system'"),
    ("unknown-method-param", lambda w, t: _cli(w, "method.params.temperatur=3"), "did you mean 'temperature'"),
    ("unknown-model-param", lambda w, t: _cli(w, "student.params.hiden=[3]"), "student.params.hiden"),
    ("unknown-teacher-source", lambda w, t: _cli(w, "teacher.source=warp"), "teacher.source: unknown teacher source"),
    ("method-without-teacher", lambda w, t: _cli(w, "teacher=null"), "needs a teacher"),
    ("bad-device", lambda w, t: _cli(w, "train.device=tpu", f"output_dir={t / 'r'}"), "train.device='tpu'"),
    ("val-fraction", lambda w, t: _cli(w, "data.val_fraction=1.5"), "data.val_fraction"),
    ("fp16-on-cpu", lambda w, t: _cli(w, "train.precision=fp16", "train.device=cpu", f"output_dir={t / 'r'}"),
     "train.precision: fp16 needs a CUDA device"),
    ("unknown-precision", lambda w, t: _cli(w, "train.precision=fp8"), "train.precision"),
    ("zero-accumulate", lambda w, t: _cli(w, "train.accumulate=0"), "train.accumulate"),
    ("warmup-twice", lambda w, t: _cli(w, "schedule.warmup_steps=5", "schedule.warmup_epochs=1"),
     "schedule: give the warm-up once"),
    ("zero-batch", lambda w, t: _cli(w, "data.batch_size=0"), "data.batch_size"),
    ("empty-split", lambda w, t: _cli(w, "data.train_subset=3", "data.val_fraction=0.9"), "empty train or validation"),
    ("flip-on-vectors", lambda w, t: _cli(w, "data.name=gaussian", "data.augment.flip=true"), "data.augment.flip"),
    ("override-without-equals", lambda w, t: _cli(w, "train.epochs"), "not of the form key.path=value"),
    ("override-into-scalar", lambda w, t: _cli(w, "seed.x=1"), "seed is not a section"),
    ("output-dir-field", lambda w, t: _cli(w, "output_dir=runs/{nme}"), "unknown field {nme}"),
    ("output-dir-attribute", lambda w, t: _cli(w, "output_dir=runs/{name.__class__}"), "unknown field"),
    ("output-dir-unclosed", lambda w, t: _cli(w, "output_dir=runs/{name"), "not a valid folder template"),
    ("output-parent-is-file", lambda w, t: _cli(w, f"output_dir={_file(t, 'f', 'x')}/run"),
     "cannot write the run folder"),
    ("missing-data-root", lambda w, t: _cli(w, "data.name=fashion_mnist", f"data.root={t / 'nowhere'}"),
     "does not exist"),
    ("missing-data-file", lambda w, t: _cli(w, "data.name=fashion_mnist", f"data.root={t}"),
     "train-images-idx3-ubyte.gz"),
    ("truncated-data-file", lambda w, t: _cli(w, "data.name=fashion_mnist", f"data.root={_fashion_root(t, lambda f: _truncate(f / 'train-labels-idx1-ubyte.gz'))}"),
     "train-labels-idx1-ubyte.gz"),
    ("labels-out-of-range", lambda w, t: _cli(w, "data.name=fashion_mnist", f"data.root={_fashion_root(t, _labels_out_of_range)}"),
     "label 12 out of range"),
    ("wrong-checksum-pickle", lambda w, t: _cli(w, "data.name=mnist1d", f"data.root={_evil_pickle_root(t)}"),
     "sha256 mismatch"),
    ("zip-member-escapes", lambda w, t: _cli(w, "data.name=cifar10", f"data.root={_cifar_zip(t, '../evil.jpg')}"),
     "cifar10-jpg-q75.zip"),
    ("resume-truncated-checkpoint", lambda w, t: _resume(w, t, lambda c: _truncate(_latest_ckpt(c) / "state.pt")),
     "truncated or corrupt"),
    ("resume-other-architecture", lambda w, t: _resume(w, t, lambda c: None, "student.params.hidden=[64]"),
     "does not fit this run"),
    ("resume-latest-is-list", lambda w, t: _resume(w, t, lambda c: (c / "latest.json").write_text("[]")),
     "latest.json is corrupt"),
    ("resume-latest-escapes", lambda w, t: _resume(w, t, lambda c: (c / "latest.json").write_text('{"checkpoint": "../../x"}')),
     "not a checkpoint folder"),
    ("resume-meta-is-list", lambda w, t: _resume(w, t, lambda c: (_latest_ckpt(c) / "meta.json").write_text("[]")),
     "meta.json is corrupt"),
    ("resume-refused-pickle", lambda w, t: _resume(w, t, _pickled_state), "could not be read safely"),
    ("rerun-without-flag", lambda w, t: _cli(w, f"output_dir={_copy_run(w, t)}"), "already holds checkpoints"),
    ("teacher-of-other-architecture", lambda w, t: _cli(w, f"teacher.checkpoint={w['student']}"),
     "but teacher.model is"),
    ("eval-other-classes", lambda w, t: ["eval", str(w["student"]), "--data", "gaussian"], "expects inputs"),
    ("eval-negative-shape", lambda w, t: ["eval", str(_saved_model(w, t, lambda m: m["spec"].update(input_shape=[-1, 8, 8]))), "--data", "digits"],
     "model.json"),
    ("eval-truncated-weights", lambda w, t: ["eval", str(_truncated_model(w, t)), "--data", "digits"],
     "model.safetensors"),
    ("cache-bad-storage", lambda w, t: _cli(w, "teacher.source=cache", "teacher.cache.storage=zip"),
     "teacher.cache.storage"),
    ("cache-missing-refused", lambda w, t: _cli(w, "teacher.source=cache", f"teacher.cache.path={t / 'none'}",
                                                "teacher.cache.on_missing=refuse"), "on_missing=refuse"),
    ("cache-info-not-a-cache", lambda w, t: ["cache", "info", str(t)], "holds no teacher cache"),
    ("cache-build-without-teacher", lambda w, t: ["cache", "build", str(w["config"]), "teacher=null",
                                                  "method.name=ce", "method.params={}"], "has no teacher section"),
    ("infodrop-not-a-conv", lambda w, t: _cli(w, "student.name=cnn", "student.params={channels: [4, 8], hidden: 8}",
                                             "student.infodrop.layers=[{conv: features.1}]"),
     "student.infodrop.layers.conv: 'features.1' is a BatchNorm2d"),
    ("compare-no-methods", lambda w, t: ["compare", str(w["config"]), "--methods", ","], "--methods names no method"),
    ("compare-zero-seeds", lambda w, t: ["compare", str(w["config"]), "--seeds", "0"], "--seeds must be at least 1"),
]


@pytest.mark.parametrize("case,make,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input(world, tmp_path, capsys, case, make, needle):
    before = tree_digest(world["root"])
    argv = make(world, tmp_path)
    targets = {p: tree_digest(p) for p in (tmp_path / "copy",) if p.exists()}
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    assert tree_digest(world["root"]) == before, "an earlier run or teacher was modified"
    for path, digest in targets.items():
        assert tree_digest(path) == digest, f"{path} was modified"


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
