import json
import os

import pytest
import torch

from kdforge.engine.checkpoint import checkpoint_name, latest_checkpoint, load_checkpoint, save_checkpoint
from kdforge.engine.seeding import rng_state, seed_everything, set_rng_state
from kdforge.errors import CheckpointError


def _module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def test_round_trip_and_latest_pointer(tmp_path):
    m = _module()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.randn(5, 4)).sum().backward()
    opt.step()
    for epoch in range(3):
        save_checkpoint(tmp_path, checkpoint_name(epoch), m, {"epoch": epoch, "optimizer": opt.state_dict(), "rng": rng_state()})
    assert latest_checkpoint(tmp_path).name == "epoch_0002"
    assert sorted(p.name for p in tmp_path.glob("epoch_*")) == ["epoch_0001", "epoch_0002"]  # keeps 2
    ckpt = load_checkpoint(latest_checkpoint(tmp_path))
    for k, v in m.state_dict().items():
        assert torch.equal(ckpt.weights[k], v)
    assert ckpt.state["optimizer"]["state"][0]["momentum_buffer"].shape == (3, 4)


def test_rng_state_restores_all_generators(tmp_path):
    import random

    import numpy as np

    module = _module()  # builds with its own seed: do it before capturing the state
    seed_everything(3)
    state = rng_state()
    save_checkpoint(tmp_path, checkpoint_name(0), module, {"rng": state})
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(99)
    set_rng_state(load_checkpoint(tmp_path / "epoch_0000").state["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


@pytest.mark.parametrize("victim", ["weights.safetensors", "state.pt"])
def test_truncated_file_is_named(tmp_path, victim):
    save_checkpoint(tmp_path, checkpoint_name(0), _module(), {"epoch": 0})
    f = tmp_path / "epoch_0000" / victim
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=victim):
        load_checkpoint(tmp_path / "epoch_0000")


def test_missing_meta_and_corrupt_pointer(tmp_path):
    save_checkpoint(tmp_path, checkpoint_name(0), _module(), {"epoch": 0})
    (tmp_path / "epoch_0000" / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="meta.json"):
        load_checkpoint(tmp_path / "epoch_0000")
    (tmp_path / "latest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="latest.json"):
        latest_checkpoint(tmp_path)


def test_failed_write_leaves_previous_checkpoint(tmp_path):
    m = _module()
    save_checkpoint(tmp_path, checkpoint_name(0), m, {"epoch": 0})

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path, checkpoint_name(1), m, {"epoch": 1, "bad": Unsaveable()})
    assert latest_checkpoint(tmp_path).name == "epoch_0000"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left
    assert json.loads((tmp_path / "latest.json").read_text())["epoch"] == 0
    load_checkpoint(tmp_path / "epoch_0000")


@pytest.mark.parametrize("pointer", ["[]", '{"checkpoint": "../../etc"}', '{"checkpoint": "/tmp/x"}', "\xff\xfe",
                                     '{"checkpoint": 3}'])
def test_a_latest_pointer_that_is_not_ours_is_refused(tmp_path, pointer):
    (tmp_path / "latest.json").write_text(pointer, errors="surrogateescape")
    with pytest.raises(CheckpointError, match="latest.json (is corrupt|names)"):
        latest_checkpoint(tmp_path)


def test_malformed_meta_and_refused_pickles_are_checkpoint_errors(tmp_path):
    import hashlib
    import json

    folder = save_checkpoint(tmp_path, checkpoint_name(0), _module(), {"epoch": 0})
    (folder / "meta.json").write_text("[]")
    with pytest.raises(CheckpointError, match="meta.json is corrupt"):
        load_checkpoint(folder)
    # a state.pt that holds an arbitrary object: weights_only refuses it, even with a matching checksum
    torch.save({"evil": Picklable()}, folder / "state.pt")
    sums = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in ("weights.safetensors", "state.pt")}
    (folder / "meta.json").write_text(json.dumps({"sha256": sums}))
    with pytest.raises(CheckpointError, match="could not be read safely"):
        load_checkpoint(folder)


class Picklable:
    pass


def test_orphans_of_killed_writes_are_removed_and_modes_follow_the_umask(tmp_path):
    (tmp_path / ".epoch_0000.abc").mkdir()
    (tmp_path / ".latest.json.xyz.tmp").write_text("{")
    folder = save_checkpoint(tmp_path, checkpoint_name(0), _module(), {"epoch": 0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0000", "latest.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert (folder.stat().st_mode & 0o777) == 0o777 & ~umask
    assert ((folder / "state.pt").stat().st_mode & 0o777) == 0o666 & ~umask
    assert ((tmp_path / "latest.json").stat().st_mode & 0o777) == 0o666 & ~umask


def test_mid_epoch_checkpoints_sort_before_their_epoch_end(tmp_path):
    for name in (checkpoint_name(0), checkpoint_name(1, 5), checkpoint_name(1), checkpoint_name(2, 3)):
        save_checkpoint(tmp_path, name, _module(), {"epoch": 0}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("epoch_*")) == ["epoch_0001", "epoch_0002_batch_000003"]
