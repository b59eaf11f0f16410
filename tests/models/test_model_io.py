"""save_model / load_model: safetensors + JSON folder, sha256-verified, atomic; clear CheckpointErrors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from kdforge.data.types import DataSpec
from kdforge.errors import CheckpointError
from kdforge.models import ModelSpec, build, load_model, load_model_with_info, save_model

SPEC = DataSpec("digits", (1, 8, 8), 10)
CFG = ModelSpec(name="cnn", params={"channels": [8, 16], "hidden": 32})


@pytest.fixture
def trained() -> torch.nn.Module:
    """A cnn whose BatchNorm running statistics moved away from their initial values."""
    torch.manual_seed(0)
    model = build(CFG, SPEC)
    with torch.no_grad():
        model(torch.randn(16, *SPEC.input_shape) * 3 + 1)
    return model.eval()


@pytest.fixture
def saved(tmp_path: Path, trained: torch.nn.Module) -> Path:
    return save_model(tmp_path / "teacher", trained, CFG, SPEC, extra={"test_acc": 0.97})


def test_round_trip_gives_identical_outputs(saved: Path, trained: torch.nn.Module) -> None:
    model, cfg, spec, extra = load_model_with_info(saved)
    x = torch.randn(5, *SPEC.input_shape)
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
    assert not model.training
    assert (cfg, spec, extra) == (CFG, SPEC, {"test_acc": 0.97})
    assert sorted(p.name for p in saved.iterdir()) == ["model.json", "model.safetensors"]


def test_round_trip_of_a_zoo_model(tmp_path: Path) -> None:
    cfg, spec = ModelSpec(name="resnet8"), DataSpec("cifar10", (3, 32, 32), 10)
    model = build(cfg, spec).eval()
    loaded = load_model(save_model(tmp_path / "r8", model, cfg, spec))
    x = torch.randn(2, *spec.input_shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_truncated_weights_name_the_file(saved: Path) -> None:
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or truncated.*re-save or re-train"):
        load_model(saved)


def test_wrong_sha_in_json_is_detected(saved: Path) -> None:
    meta_path = saved / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["weights"]["sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or truncated"):
        load_model(saved)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope: no saved model folder"):
        load_model(tmp_path / "nope")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, r"model\.json: missing"),
        ("{not json", r"model\.json: not readable JSON"),
        (json.dumps({"format": "kdforge.model", "format_version": 1, "model": {"name": "cnn"}}), "missing key 'spec'"),
        (json.dumps({"format": "kdforge.model", "format_version": 1, "model": {}}), r"model\.json: malformed"),
    ],
)
def test_bad_metadata_names_the_file(saved: Path, content: str | None, expected: str) -> None:
    meta_path = saved / "model.json"
    if content is None:
        meta_path.unlink()
    else:
        meta_path.write_text(content)
    with pytest.raises(CheckpointError, match=expected):
        load_model(saved)


def test_save_refuses_a_model_that_does_not_match_its_config(tmp_path: Path, trained: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="do not fit 'mlp'"):
        save_model(tmp_path / "m", trained, ModelSpec(name="mlp"), SPEC)
    assert not (tmp_path / "m").exists()


def test_extra_must_be_json(tmp_path: Path, trained: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="JSON-serializable"):
        save_model(tmp_path / "m", trained, CFG, SPEC, extra={"tensor": torch.zeros(1)})
    assert not (tmp_path / "m").exists()
