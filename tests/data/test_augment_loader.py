"""Augmentation ops, their replay, and the epoch-seeded BatchIterator."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kdforge.data import AugmentSettings, BatchIterator, iter_eval
from kdforge.data.augment import augment, draw, flip, mixed_target, replay, replay_samples, shift
from kdforge.data.seeds import epoch_seed
from kdforge.data.types import Split

ALL_ON = AugmentSettings(crop_padding=3, flip=True, mixup_alpha=0.4, cutmix_alpha=1.0)


def _images(b: int = 16, c: int = 3, h: int = 8, w: int = 10) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(0))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_flip_twice_is_identity() -> None:
    x, mask = _images(), torch.rand(16, generator=_gen()) < 0.5
    assert torch.equal(flip(flip(x, mask), mask), x)
    assert torch.equal(flip(x, mask)[mask], x[mask].flip(-1)) and torch.equal(flip(x, mask)[~mask], x[~mask])


def test_shift_zero_is_identity_and_padding_zero_draws_no_crop() -> None:
    x = _images()
    assert torch.equal(shift(x, torch.zeros(16, 2, dtype=torch.long)), x)
    assert "crop_shift" not in draw(AugmentSettings(crop_padding=0), x.shape, _gen())


def test_shift_matches_crop_of_padded_image() -> None:
    x, pad = _images(), 3
    offsets = draw(AugmentSettings(crop_padding=pad), x.shape, _gen())["crop_shift"]
    assert offsets.abs().max() <= pad
    padded = F.pad(x, (pad, pad, pad, pad))
    expected = torch.stack(
        [padded[i, :, pad + dy : pad + dy + 8, pad + dx : pad + dx + 10] for i, (dy, dx) in enumerate(offsets.tolist())]
    )
    assert torch.equal(shift(x, offsets), expected)


def test_replay_is_bit_identical() -> None:
    x, y = _images(), torch.arange(16) % 5
    for seed in range(6):  # covers mixup, cutmix and crop/flip draws
        out, target, params = augment(x, y, ALL_ON, 5, _gen(seed))
        assert torch.equal(replay(x.clone(), params), out)


def test_mixup_target_and_pixels() -> None:
    x, y = _images(), torch.arange(16) % 4
    out, target, params = augment(x, y, AugmentSettings(mixup_alpha=0.4), 4, _gen())
    lam, perm = params["mix_lam"], params["mix_perm"]
    assert 0 <= float(lam) <= 1 and sorted(perm.tolist()) == list(range(16))
    assert target is not None and target.shape == (16, 4) and target.dtype == torch.float32
    assert torch.allclose(target.sum(1), torch.ones(16))
    assert torch.allclose(out, lam * x + (1 - lam) * x[perm])


def test_cutmix_lambda_is_one_minus_box_area() -> None:
    x, y = _images(), torch.arange(16) % 4
    for seed in range(8):
        out, target, params = augment(x, y, AugmentSettings(cutmix_alpha=1.0), 4, _gen(seed))
        top, left, bottom, right = params["mix_box"].tolist()
        area = (bottom - top) * (right - left) / (8 * 10)
        assert float(params["mix_lam"]) == pytest.approx(1 - area)
        inside = torch.zeros(8, 10, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        assert torch.equal(out[..., inside], x[params["mix_perm"]][..., inside])
        assert torch.equal(out[..., ~inside], x[..., ~inside])
        assert torch.allclose(target.sum(1), torch.ones(16))


def test_mix_prob_zero_never_mixes() -> None:
    never = AugmentSettings(mixup_alpha=1, mix_prob=0)
    _, target, params = augment(_images(), torch.zeros(16, dtype=torch.long), never, 2, _gen())
    assert target is None and params == {}


def _split(n: int = 50) -> Split:
    return Split(x=torch.randn(n, 3, 8, 8, generator=_gen(1)), y=torch.arange(n) % 5)


def _batches(it: BatchIterator, e: int) -> list[tuple[torch.Tensor, ...]]:
    return [(b.x, b.index, *(b.params[k] for k in sorted(b.params))) for b in it.epoch(e)]


def test_epoch_is_a_function_of_seed_and_epoch_only() -> None:
    split = _split()
    first = BatchIterator(split, 16, 5, ALL_ON, seed=1)
    assert len(first) == 4 and len(BatchIterator(split, 16, 5, ALL_ON, seed=1, drop_last=True)) == 3
    fresh = BatchIterator(split, 16, 5, ALL_ON, seed=1)
    _batches(first, 0)
    for a, b in zip(_batches(first, 1), _batches(fresh, 1), strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(_batches(fresh, 1)[0][1], _batches(fresh, 2)[0][1])
    assert not torch.equal(_batches(fresh, 1)[0][1], _batches(BatchIterator(split, 16, 5, ALL_ON, seed=2), 1)[0][1])


def test_batches_cover_the_split_and_replay_from_index() -> None:
    split = _split()
    it = BatchIterator(split, 16, 5, ALL_ON, seed=0)
    seen = []
    for batch in it.epoch(3):
        seen += batch.index.tolist()
        assert torch.equal(batch.y, split.y[batch.index])
        assert torch.equal(replay_samples(split.x, batch.index, batch.params), batch.x)
    assert sorted(seen) == list(range(50))


@pytest.mark.parametrize("cfg", [ALL_ON, AugmentSettings(crop_padding=2, mixup_alpha=0.5, mix_prob=1.0),
                                 AugmentSettings(cutmix_alpha=1.0, mix_prob=1.0)])
def test_per_sample_views_equal_the_batch_drawn_ones_bit_for_bit(cfg: AugmentSettings) -> None:
    """The loader rebuilds each sample's view from per-sample params; this must give exactly what replaying the
    batch-level draw gives (the augmentation the loader drew before it worked per sample)."""
    split = _split()
    gen = _gen(epoch_seed(0, 2))
    order = torch.randperm(len(split), generator=gen)
    mixed = 0
    for j, batch in enumerate(BatchIterator(split, 16, 5, cfg, seed=0).epoch(2)):
        index = order[16 * j : 16 * (j + 1)]
        params = draw(cfg, (len(index), *split.x.shape[1:]), gen)
        assert torch.equal(batch.index, index)
        assert torch.equal(batch.x, replay(split.x[index], params))
        mixed += "mix_perm" in params
        if "mix_perm" in params:
            assert torch.equal(batch.target, mixed_target(split.y[index], params, 5))
    assert mixed > 0


def test_shards_of_a_batch_are_the_rows_of_the_one_process_batch() -> None:
    """Two processes at global batch 16 see, together, exactly the views of one process at batch 16; a last
    batch smaller than the number of processes is dropped."""
    split = _split()  # 50 samples: batches of 16, 16, 16, 2
    whole = list(BatchIterator(split, 16, 5, ALL_ON, seed=3).epoch(1))
    shards = [list(BatchIterator(split, 16, 5, ALL_ON, seed=3, rank=r, world_size=2).epoch(1)) for r in (0, 1)]
    assert [len(b) for b in shards[0]] == [8, 8, 8, 1] and len(BatchIterator(split, 49, 5, ALL_ON, 3, world_size=2)) == 1
    for one, a, b in zip(whole, *shards, strict=True):
        assert torch.equal(torch.cat([a.index, b.index]), one.index)
        assert torch.equal(torch.cat([a.x, b.x]), one.x)
        for shard in (a, b):  # each shard's per-sample params rebuild it alone, partners in the other shard too
            assert torch.equal(replay_samples(split.x, shard.index, shard.params), shard.x)


def test_plain_iteration_and_iter_eval() -> None:
    split = _split()
    batches = list(BatchIterator(split, 16, 5, AugmentSettings(), seed=0, shuffle=False).epoch(0))
    assert torch.equal(torch.cat([b.x for b in batches]), split.x) and all(b.target is None for b in batches)
    evals = list(iter_eval(split, 16))
    xs, ys = [b.x for b in evals], [b.y for b in evals]
    assert [len(v) for v in ys] == [16, 16, 16, 2]
    assert torch.equal(torch.cat(xs), split.x) and torch.equal(torch.cat(ys), split.y)


def test_iterator_refuses_crop_on_vectors() -> None:
    from kdforge.errors import ConfigError

    with pytest.raises(ConfigError, match="the training inputs"):
        BatchIterator(Split(torch.zeros(4, 7), torch.zeros(4, dtype=torch.long)), 2, 2, AugmentSettings(flip=True), 0)


def test_unlabeled_split_gives_batches_without_labels() -> None:
    split = _split().unlabel()
    batches = list(BatchIterator(split, 16, 5, AugmentSettings(mixup_alpha=1.0), seed=0, name="unlabeled").epoch(0))
    assert all(b.y is None and b.target is None and b.split == "unlabeled" for b in batches)
    assert torch.equal(split.hidden_y, _split().y)  # the truth is kept for analysis, not in batches
    with pytest.raises(ValueError, match="no labels"):
        batches[0].labels


def test_token_ids_refuse_every_augmentation() -> None:
    from kdforge.errors import ConfigError

    tokens = Split(torch.randint(2, 50, (8, 5)), torch.zeros(8, dtype=torch.long))
    with pytest.raises(ConfigError, match="mixup_alpha.*token data"):
        BatchIterator(tokens, 4, 2, AugmentSettings(mixup_alpha=0.2), 0)
    assert torch.equal(next(BatchIterator(tokens, 4, 2, AugmentSettings(), 0, shuffle=False).epoch(0)).x, tokens.x[:4])
