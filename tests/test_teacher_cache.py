"""The teacher-output cache: replayed views and outputs are the live ones, keys and checksums guard it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdforge.api import build_data, build_teacher_cache, load_config, prepare_teacher, run, settings
from kdforge.cli import main
from kdforge.config.schema import AugmentConfig
from kdforge.data import BatchIterator
from kdforge.data.augment import replay_samples
from kdforge.errors import CacheError, ConfigError
from kdforge.teachers import LiveTeacher
from kdforge.teachers.cache import RecordedViews, TeacherCache
from kdforge.teachers.cache.store import _spread

CONFIG = Path(__file__).parents[1] / "configs" / "digits_kd.yaml"
# Every augmentation op on (digits are 8x8 images): crops, flips, and mixup and cutmix batches, some unmixed.
AUG = ["data.augment.crop_padding=1", "data.augment.flip=true", "data.augment.mixup_alpha=0.3",
       "data.augment.cutmix_alpha=1.0", "data.augment.mix_prob=0.7"]


@pytest.fixture(scope="module")
def store(teacher_store: Path) -> Path:
    return teacher_store


def _cfg(store: Path, tmp: Path, *extra: str):
    return load_config(CONFIG, [f"teacher.store_dir={store}", "teacher.recipe.train.epochs=5", "train.epochs=3",
                                "train.tensorboard=false", f"output_dir={tmp}/run", *AUG, *extra])


def _weights(run_dir: str) -> dict[str, torch.Tensor]:
    return load_file(Path(run_dir) / "student" / "model.safetensors")


def test_cached_kd_is_bit_identical_to_live_kd(store: Path, tmp_path: Path) -> None:
    """fp32 storage, same seed and batch: the student sees the same views and the same teacher logits, so its
    weights are the live run's bit for bit; the teacher never runs during training."""
    live = _cfg(store, tmp_path / "live")
    run(live)
    cached = _cfg(store, tmp_path / "cached", "teacher.source=cache", "teacher.cache.epochs=3",
                  "teacher.cache.dtype=float32", f"teacher.cache.path={tmp_path / 'cache'}")
    build_teacher_cache(cached)
    calls = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    try:
        run(cached)
    finally:
        handle.remove()
    a, b = _weights(live.run_dir), _weights(cached.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The teacher (a CNN: Conv2d) ran only for the set-up dry forward and the val/test agreement metrics.
    assert calls.count("Conv2d") <= 2 * 4


def test_views_are_replayed_for_any_seed_and_batch(store: Path, tmp_path: Path) -> None:
    """A run with another seed and batch size reuses the cache: each sample gets its recorded view (its mixing
    partner may now sit in another batch), and the cached logits are the teacher's on exactly that view."""
    cfg = _cfg(store, tmp_path, "teacher.cache.epochs=2", "teacher.cache.dtype=float32",
               "teacher.cache.shard_rows=500", f"teacher.cache.path={tmp_path / 'cache'}")  # 3 shards per epoch
    cache = build_teacher_cache(cfg)
    bundle = build_data(cfg.data)
    teacher = LiveTeacher(prepare_teacher(cfg, bundle))
    loader = BatchIterator(bundle.train, 37, 10, settings.augment(cfg.data.augment), seed=11, views=RecordedViews(cache))
    mixed = 0
    for epoch in (1, 2):  # 2 cycles back to recorded epoch 0
        for batch in loader.epoch(epoch):
            assert batch.view_epoch == epoch % 2
            assert torch.equal(batch.x, replay_samples(bundle.train.x, batch.index, batch.params))
            recorded = cache.outputs("train", epoch % 2, batch.index, (), 10, "uniform").logits
            torch.testing.assert_close(teacher.outputs(batch).logits, recorded, atol=1e-4, rtol=1e-4)
            mixed += "mix_partner" in batch.params
    assert mixed > 0


def test_cycle_or_live_past_the_recorded_epochs(store: Path, tmp_path: Path) -> None:
    cfg = _cfg(store, tmp_path, f"teacher.cache.path={tmp_path / 'cache'}", "teacher.cache.epochs=2")
    build_teacher_cache(cfg)
    cycling, live = RecordedViews(TeacherCache(tmp_path / "cache")), RecordedViews(TeacherCache(tmp_path / "cache"), "live")
    assert cycling.covers("train", 5) and cycling.view("train", 5, torch.arange(3))[0] == 1
    assert live.covers("train", 1) and not live.covers("train", 2) and not cycling.covers("unlabeled", 0)
    out = run(_cfg(store, tmp_path / "r", "teacher.source=cache", f"teacher.cache.path={tmp_path / 'cache'}",
                   "teacher.cache.epochs=2", "teacher.cache.after=live"))
    assert out["epochs"] == 3


def test_topk_keeps_the_top_probabilities_and_spreads_or_drops_the_rest() -> None:
    logits = torch.tensor([[2.0, -1.0, 1.0, 0.0, -3.0]])
    top = logits.topk(2)
    rows = {"topk_values": top.values, "topk_indices": top.indices, "lse": logits.logsumexp(-1)}
    p = logits.softmax(-1)[0]
    uniform = _spread(rows, 5, "uniform").softmax(-1)[0]
    torch.testing.assert_close(uniform[[0, 2]], p[[0, 2]])
    torch.testing.assert_close(uniform[[1, 3, 4]], ((1 - p[0] - p[2]) / 3).expand(3))
    drop = _spread(rows, 5, "drop").softmax(-1)[0]
    torch.testing.assert_close(drop[[0, 2]], p[[0, 2]] / (p[0] + p[2]))
    assert drop[[1, 3, 4]].sum() == 0 and torch.isfinite(_spread(rows, 5, "drop")).all()


def test_a_mismatched_cache_says_what_differs_and_can_be_rebuilt(store: Path, tmp_path: Path) -> None:
    path = f"teacher.cache.path={tmp_path / 'cache'}"
    build_teacher_cache(_cfg(store, tmp_path, path, "teacher.cache.epochs=2"))
    with pytest.raises(CacheError, match=r"built for other inputs: epochs \(cached 2, this run 3\); rebuild"):
        build_teacher_cache(_cfg(store, tmp_path, path, "teacher.cache.epochs=3"))
    rebuilt = build_teacher_cache(_cfg(store, tmp_path, path, "teacher.cache.epochs=3",
                                       "teacher.cache.on_mismatch=rebuild"))
    assert rebuilt.epochs == 3 and not list(tmp_path.glob(".cache.building-*"))


def test_a_damaged_shard_is_named_in_one_line_and_nothing_is_written(store: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(store, tmp_path, f"teacher.cache.path={tmp_path / 'cache'}")
    build_teacher_cache(cfg)
    shard = tmp_path / "cache" / "train" / "epoch_0000" / "shard_0000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    args = ["distill", str(CONFIG), f"teacher.store_dir={store}", "teacher.recipe.train.epochs=5", *AUG,
            "teacher.source=cache", f"teacher.cache.path={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"shard {shard} is damaged" in err and "--rebuild" in err
    assert main(["cache", "info", str(tmp_path / "cache"), "--verify"]) == 2
    assert not (tmp_path / "run" / "summary.json").exists()


def test_tapped_features_are_cached_and_their_size_is_bounded(store: Path, tmp_path: Path) -> None:
    fitnet = ["method.name=fitnet", "method.params={student_layer: features.3, teacher_layer: features.7}",
              "student.name=cnn", "student.params={channels: [8, 16], hidden: 32}", "teacher.cache.dtype=float32",
              f"teacher.cache.path={tmp_path / 'cache'}"]
    cfg = _cfg(store, tmp_path, *fitnet)
    cache = build_teacher_cache(cfg)
    assert cache.features == ["features.7"]
    bundle = build_data(cfg.data)
    teacher = LiveTeacher(prepare_teacher(cfg, bundle))
    teacher.tap(["features.7"])
    batch = next(BatchIterator(bundle.train, 64, 10, settings.augment(cfg.data.augment), seed=0, views=RecordedViews(cache)).epoch(0))
    recorded = cache.outputs("train", 0, batch.index, ["features.7"], 10, "uniform").features["features.7"]
    torch.testing.assert_close(teacher.outputs(batch).features["features.7"], recorded)
    with pytest.raises(ConfigError, match=r"teacher\.cache: the cache would take [\d.]+ MB \(1 tapped feature map\(s\) "
                                          r"included\), over teacher\.cache\.max_gb"):
        build_teacher_cache(_cfg(store, tmp_path, *fitnet[:-1], f"teacher.cache.path={tmp_path / 'c2'}",
                                 "teacher.cache.max_gb=0.0001"))
    run(_cfg(store, tmp_path / "fit", *fitnet, "teacher.source=cache"))


def test_without_augmentation_one_epoch_is_recorded(store: Path, tmp_path: Path) -> None:
    plain = load_config(CONFIG, [f"teacher.store_dir={store}", "teacher.recipe.train.epochs=5",
                                 "teacher.cache.epochs=9", f"teacher.cache.path={tmp_path / 'plain'}"])
    assert plain.data.augment == AugmentConfig() and build_teacher_cache(plain).epochs == 1


def test_distill_api_builds_and_replays_a_cache(store: Path, tmp_path: Path) -> None:
    import kdforge

    cfg = _cfg(store, tmp_path)
    bundle = build_data(cfg.data)
    teacher = prepare_teacher(cfg, bundle)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    options = kdforge.TeacherCacheConfig(path=str(tmp_path / "cache"), epochs=2)
    augment = kdforge.AugmentConfig(flip=True, mixup_alpha=0.2)
    result = kdforge.distill(student, teacher, (bundle.train.x, bundle.train.y), val=bundle.val, epochs=3,
                             augment=augment, teacher_cache=options, run_dir=tmp_path / "run", tensorboard=False)
    assert result.val["top1"] > 0.5 and TeacherCache(tmp_path / "cache").epochs == 2


def test_graph_teacher_cache_gives_the_live_gcn_to_mlp_run(tmp_path: Path) -> None:
    """Cora, a GCN teacher distilled into an MLP (GLNN's setting): node outputs recorded once per training node,
    replayed bit-identically to the live teacher (fp32)."""
    from kdforge.data import resolve_root
    from kdforge.errors import DataError

    try:
        root = resolve_root(None)
    except DataError:
        pytest.skip("no data folder")
    if not (root / "planetoid" / "raw" / "ind.cora.x").exists():
        pytest.skip("Planetoid files absent")
    config = tmp_path / "cora.yaml"
    config.write_text(
        "name: cora_glnn\ndata: {name: cora, batch_size: 140, params: {split: public}}\n"
        "teacher:\n  model: {name: gcn, params: {hidden: 16}}\n"
        "  recipe: {optim: {name: adam, lr: 0.01}, schedule: {name: constant}, train: {epochs: 30, progress: false}}\n"
        "student: {name: mlp, params: {hidden: [32]}}\n"
        "method: {name: kd, params: {temperature: 1.0, ce_weight: 0.5, kd_weight: 0.5}}\n"
        "optim: {name: adam, lr: 0.01}\nschedule: {name: constant}\n"
        "train: {epochs: 10, progress: false, tensorboard: false}\n")
    common = [f"teacher.store_dir={tmp_path / 't'}"]
    live = load_config(config, [*common, f"output_dir={tmp_path / 'live'}"])
    cached = load_config(config, [*common, f"output_dir={tmp_path / 'cached'}", "teacher.source=cache",
                                  "teacher.cache.dtype=float32", f"teacher.cache.path={tmp_path / 'cache'}"])
    run(live)
    run(cached)
    assert TeacherCache(tmp_path / "cache").manifest["splits"]["train"]["rows"] == 140
    a, b = _weights(live.run_dir), _weights(cached.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
