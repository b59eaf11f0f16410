"""Running a shipped example config on a sliver of its data, for test_configs.py and test_configs_cifar10.py (the
CIFAR-10 configs, in a file of their own so that `--dist loadfile` can give them to the second worker)."""
from __future__ import annotations

from pathlib import Path

import pytest

from support import SHARED

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
CIFAR10 = [p for p in CONFIGS if p.stem.startswith("cifar10_")]
NEEDS_FILES = {"mnist", "fashion_mnist", "mnist1d", "cifar10", "cora", "citeseer", "sst2", "trec"}
OWN_VALIDATION = {"cora", "citeseer", "sst2"}  # these keep their own validation split: no val_fraction
NO_FILES_IN_SNAPSHOT = {"pubmed"}  # registered, but its raw files are too large for the data snapshot
# Not in the data snapshot either; their configs run on fake files in tests/data/test_cifar100_configs.py, and an
# image folder is the user's own (tests/data/test_imagefolder.py).
NOT_IN_SNAPSHOT = {"cifar100", "imagefolder"}
# (training, test) images of a sliver where the default (200, 100) costs most: the CIFAR-10 configs train and
# evaluate ResNets (a resnet32x4 teacher), and the sliver checks only that a config is wired end to end: 48 images
# (34 to train, one batch of 64; 14 to validate) and 20 to test still run every step of a config once.
SLIVER = {"cifar10": (48, 20)}


def run_on_a_sliver(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, teacher_store: Path) -> None:
    """Run the config at `path` end to end on a sliver; check its summary and saved student."""
    from kdforge.api import load_config, run

    cfg = load_config(path)
    if cfg.data.name in NOT_IN_SNAPSHOT:
        pytest.skip(f"no {cfg.data.name} files in the data snapshot")
    if cfg.data.name in NEEDS_FILES and not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    monkeypatch.setenv("KDFORGE_CACHE", str(tmp_path.parent / "kdforge-cache"))  # shared by the CIFAR runs
    # A sliver: this checks that every config is wired end to end, not what it learns. Configs with the same
    # teacher (after the sliver) share it through the session's store, trained once.
    # (a label budget keeps the default: its rarest class needs enough images to keep one label)
    train, test = SLIVER.get(cfg.data.name, (200, 100)) if cfg.data.label_budget is None else (200, 100)
    overrides = ["train.epochs=1", f"data.train_subset={train}", f"data.test_subset={test}", "train.progress=false",
                 f"output_dir={tmp_path / 'run'}"]
    if cfg.data.name not in OWN_VALIDATION:
        overrides.append("data.val_fraction=0.3")
    if cfg.data.label_budget is not None:  # a sliver's rarest class needs a larger share to keep one label
        overrides.append("data.label_budget.labeled=0.5")
    if cfg.teacher is not None:
        overrides += ["teacher.recipe.train.epochs=1", "teacher.recipe.train.progress=false",
                      f"teacher.store_dir={teacher_store}"]
    if cfg.method.name == "dfa":  # train.epochs counts its search too: one epoch of each stage
        overrides += ["train.epochs=2", "method.params.search_epochs=1"]
    summary = run(load_config(path, overrides))
    assert 0.0 <= summary["test"]["top1"] <= 1.0
    assert (tmp_path / "run" / "student" / "model.safetensors").exists()
    assert (tmp_path / "run" / "summary.json").exists()
