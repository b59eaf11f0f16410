"""A small digits search (no data files) whose teacher is trained once per session."""
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="session")
def teacher_store(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("teachers")


@pytest.fixture
def search_config(tmp_path, teacher_store):
    """write(**changes) -> path of a digits search config writing into tmp_path (heartbeat 1 s, grace 2 s)."""
    def write(name: str = "s", **changes) -> Path:
        cfg = {
            "name": name, "experiment": str(CONFIGS / "digits_kd.yaml"),
            "overrides": ["train.progress=false", f"teacher.store_dir={teacher_store}",
                          "teacher.recipe.train.epochs=5"],
            "out": str(tmp_path / "out"), "heartbeat_s": 1, "grace_s": 2,
            "space": {"max_transforms": 2, "weights": [1.0, 5.0, 20.0]},
            "evolution": {"trials": 8, "population": 4, "tournament": 2, "seed": 0},
            "proxy": {"train_subset": 400, "val_subset": 180, "epochs": 2, "warmup_batches": 3},
        }
        for key, value in changes.items():
            cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path
    return write
