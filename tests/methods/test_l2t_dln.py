"""L2T-DLN as a method: one step against a hand-written bilevel update (the official main.py order) in both data
loops, the official loop's data stream against a port of main.py's loop, the official init of the loss network,
the learned-loss grid it logs, and runs stopped mid-way (at an epoch end, and mid-epoch) that resume
bit-identical (LSTM memory, Adam state, DLN, the data position)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kdforge.models as models
from kdforge.api import build_data
from kdforge.config.schema import DataConfig
from kdforge.data import AugmentSettings, Batches
from kdforge.data.types import Split
from kdforge.engine import Trainer, latest_checkpoint, load_checkpoint, seed_everything
from kdforge.engine.checkpoint import checkpoint_name
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.errors import ConfigError
from kdforge.losses import dln_loss, preprocess_gradients
from kdforge.methods import METHODS, MethodSpec, Setup, validate_params
from kdforge.methods.l2t_dln import GRID, LossNetwork, Position, ResplitStream, inner_batches
from kdforge.models import ModelSpec

from support import Stop, full_and_resumed

K = 3
LOOP_PARAMS = {"fixed": {}, "official": {"inner_batch": 10, "val_batch": 20}}


def _trainer(run_dir: str, epochs: int = 2, callbacks: tuple = (), loop: str = "fixed",
             checkpoint_steps: int | None = None) -> Trainer:
    bundle = build_data(DataConfig(name="digits", val_fraction=0.5, train_subset=300))  # 150 train / 150 val
    seed_everything(0)
    student = models.build(ModelSpec(name="mlp", params={"hidden": [16]}), bundle.spec)
    params = METHODS["l2t_dln"].Params(inner_steps=K, dln_width=8, lstm_hidden=8, loop=loop, **LOOP_PARAMS[loop])
    method = METHODS["l2t_dln"](student, None, params, Setup.for_data(bundle.spec, bundle.train))
    recipe = Recipe(seed=0, optim=OptimSettings(name="sgd", lr=0.1),
                    train=LoopSettings(epochs=epochs, progress=False, tensorboard=False,
                                            checkpoint_steps=checkpoint_steps))
    return Trainer(method, Batches(bundle, K * 10), recipe, run_dir, callbacks=callbacks)


def _state(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in t.method.trainable().state_dict().items()}


@pytest.mark.parametrize("loop", ["fixed", "official"])
def test_one_step_is_the_official_bilevel_update(tmp_path, loop):
    t = _trainer(str(tmp_path / "run"), epochs=1, loop=loop)
    method = t.method
    before = _state(t)
    student0 = {n: p.detach().clone() for n, p in method.student.named_parameters()}
    lstm_copy = {n: p.detach().clone() for n, p in method.lstm.named_parameters()}
    captured = {}

    def first_step(batch, ctx):  # run the real step once, recording the data it drew, then stop
        draw = method._data
        method._data = lambda b, c: captured.setdefault("data", draw(b, c))
        real(batch, ctx)
        raise Stop

    real, method.training_step = method.training_step, first_step
    with pytest.raises(Stop):
        t.fit()
    parts, val = captured["data"]
    assert len(parts) == K and len(val) == (20 if loop == "official" else K * 10)

    # The same update written out by hand, the official main.py order.
    def run(weights):
        params = {n: p.clone().requires_grad_() for n, p in student0.items()}
        for part in parts:
            loss = dln_loss(torch.func.functional_call(method.student, params, (part.x,)), part.y, weights)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            params = {n: p - 0.1 * g for (n, p), g in zip(params.items(), grads)}
        return params, F.cross_entropy(torch.func.functional_call(method.student, params, (val.x,)), val.y)

    w0 = [before[f"loss_net.layers.{i}.weight"].clone().requires_grad_() for i in range(5)]
    _, v = run(w0)
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(v, w0)])
    lstm = type(method.lstm)(8)
    lstm.load_state_dict(lstm_copy)
    zeros = [torch.zeros(g.numel(), s) for s in (8, 8, 8, 1)]
    out, _, _ = lstm(preprocess_gradients(g), zeros, zeros)
    new_w = [w.detach() - s.view_as(w) for w, s in zip(w0, (1e-3 * out.view(-1)).split([w.numel() for w in w0]))]
    params, v2 = run(new_w)
    lstm_grads = torch.autograd.grad(v2, list(lstm.parameters()))
    after = _state(t)
    for i, w in enumerate(new_w):
        assert torch.allclose(after[f"loss_net.layers.{i}.weight"], w, atol=1e-7)
    for n, p in params.items():
        assert torch.allclose(after[f"student.{n}"], p.detach(), atol=1e-6)
    # Adam's first step (bias-corrected moments g and g^2): each LSTM weight moves by -lr * g / (|g| + eps)
    for (n, p), gr in zip(method.lstm.named_parameters(), lstm_grads):
        moved = p.detach() - lstm_copy[n]
        assert torch.allclose(moved, -1e-3 * gr / (gr.abs() + 1e-8), rtol=1e-3, atol=1e-7), n
    # (weight_hh gets no gradient on the first step: the memory starts at zero); the input weights do move
    assert (method.lstm.cells[0].weight_ih - lstm_copy["cells.0.weight_ih"]).abs().max() > 1e-5
    assert not torch.equal(after["lstm_h3"], torch.zeros_like(after["lstm_h3"]))  # memory carried


@pytest.mark.parametrize("loop", ["fixed", "official"])
def test_stop_and_resume_is_bit_identical(tmp_path, loop):
    full, full_result, resumed, result = full_and_resumed(lambda d, **kw: _trainer(d, loop=loop, **kw), tmp_path)
    assert result.resumed_from == 0  # the epoch whose checkpoint it resumed from
    state = load_checkpoint(latest_checkpoint(tmp_path / "cut" / "checkpoints")).state
    assert set(state["optimizers"]) == {"teacher"}
    a, b = _state(full), _state(resumed)
    assert a.keys() == b.keys() and {"loss_net.layers.0.weight", "lstm.cells.0.weight_ih", "lstm_c0"} <= set(a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert result.test == full_result.test
    last = result.history[-1]
    assert {"dln", "val_ce", "val_ce_before", "logit_true", "sig_other", "inner_top1", "inner_steps"} <= set(last)
    assert ("train_top1" in last) == (loop == "fixed")  # the official loop's batches are not the trainer's
    if loop == "official":  # 8 validation batches of 20 per outer loop: 10 steps cross into outer loop 1
        assert full.method._position == resumed.method._position == Position(1, 2, 0, 6)
        first = load_checkpoint(tmp_path / "cut" / "checkpoints" / checkpoint_name(0)).state  # resumed from it
        assert first["method"]["position"] == {"outer": 0, "val": 5, "train_pass": 0, "train": 15}


def test_official_loop_resumes_mid_epoch_bit_identical(tmp_path):
    full = _trainer(str(tmp_path / "full"), loop="official", checkpoint_steps=2)
    full_result = full.fit()
    cut = _trainer(str(tmp_path / "cut"), loop="official", checkpoint_steps=2)
    real = cut.method.training_step

    def crash_at_7(batch, ctx):  # dies in epoch 1 (5 steps an epoch) after its checkpoint at step 6
        if ctx.step == 7:
            raise Stop
        return real(batch, ctx)

    cut.method.training_step = crash_at_7
    with pytest.raises(Stop):
        cut.fit()
    state = load_checkpoint(latest_checkpoint(tmp_path / "cut" / "checkpoints")).state
    assert state["step"] == 6 and state["batch"] == 1
    assert state["method"]["position"] == {"outer": 0, "val": 6, "train_pass": 1, "train": 2}
    resumed = _trainer(str(tmp_path / "cut"), loop="official", checkpoint_steps=2)
    result = resumed.fit(resume=True)
    a, b = _state(full), _state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert result.history[0] == full_result.history[1] and result.test == full_result.test


def _official_train_slots(n_batches: int, k: int, steps: int) -> list[list[tuple[int, int]]]:
    """main.py:179, 188-194 on batch ids: (pass, batch) of each step's inner batches; `next(triter, True)` at the
    end of the loader restarts it and loses the slot."""
    def loader(n_pass):
        return iter([(n_pass, j) for j in range(n_batches)])

    n_pass, triter, out = 0, loader(0), []
    for _ in range(steps):
        trainset = []
        for _ in range(k):
            d = next(triter, True)
            if d is True:
                n_pass += 1
                triter = loader(n_pass)
                continue
            trainset.append(d)
        out.append(trainset)
    return out


def _stream(n_train: int = 23, n_val: int = 17, sizes: tuple[int, int] = (5, 4), seed: int = 3) -> ResplitStream:
    pool = Split(torch.arange(n_train + n_val, dtype=torch.float32).view(-1, 1), torch.arange(n_train + n_val))
    return ResplitStream(pool, n_train, sizes, num_classes=n_train + n_val, augment=AugmentSettings(), seed=seed)


def test_resplit_stream_follows_main_py():
    stream, k = _stream(), 4
    n_train_batches, n_val_batches = 5, 5  # ceil(23 / 5), ceil(17 / 4): partial last batches kept
    steps = 3 * n_val_batches
    official = _official_train_slots(n_train_batches, k, n_val_batches)
    seen_val: dict[int, list[int]] = {}
    seen_train: dict[int, list[int]] = {}
    for step in range(steps):
        outer = stream.pos.outer if stream.pos.val < n_val_batches else stream.pos.outer + 1
        parts, val = stream.next(k)
        assert stream.pos.outer == outer == step // n_val_batches
        seen_val.setdefault(outer, []).extend(val.y.tolist())
        seen_train.setdefault(outer, []).extend(r for p in parts for r in p.y.tolist())
        # the slots of one outer loop follow main.py's train iterator exactly (counts, passes, lost slots)
        assert len(parts) == len(official[step % n_val_batches])
        assert [len(p) for p in parts] == [5 if j < 4 else 3 for _, j in official[step % n_val_batches]]
    splits = []
    for outer in range(3):
        val_rows, train_rows = set(seen_val[outer]), seen_train[outer]
        assert len(seen_val[outer]) == 17 == len(val_rows)  # one pass over the validation half, each row once
        assert len(set(train_rows[:23])) == 23  # the first pass over the train half holds each of its rows once
        assert not set(train_rows) & val_rows and set(train_rows) | val_rows == set(range(40))
        splits.append(frozenset(val_rows))
    assert len(set(splits)) == 3  # a fresh split at every outer loop


def test_resplit_stream_restored_at_a_position_draws_the_same_batches():
    through, k = _stream(), 4
    drawn = [through.next(k) for _ in range(12)]
    for at in (2, 5, 7):
        again = _stream()
        for _ in range(at):
            again.next(k)
        saved = Position(**vars(again.pos))
        restored = _stream()
        restored.restore(saved)
        for parts, val in drawn[at:]:
            p2, v2 = restored.next(k)
            assert torch.equal(v2.x, val.x) and [p.x.tolist() for p in p2] == [p.x.tolist() for p in parts]


def _official_meta_optimizer_weights(seed: int) -> list[torch.Tensor]:
    """DLN_LSTM.py:15-24 with meta_module.py:105-108: mat_0..mat_3 then final_mat, each an nn.Linear drawn, then
    kaiming_normal_(fan_out, leaky_relu) over its weight."""
    torch.manual_seed(seed)
    lst = [4, 40, 40, 40, 40, 40]
    sizes = [(lst[i], lst[i + 1]) for i in range(4)] + [(lst[-1], 1)]
    out = []
    for a, b in sizes:
        ignore = nn.Linear(a, b, False)
        out.append(nn.init.kaiming_normal_(ignore.weight.data, mode="fan_out", nonlinearity="leaky_relu"))
    return out


def test_official_init_is_the_official_draw_and_has_std_sqrt_2_over_fan_out():
    for seed in (0, 7):
        torch.manual_seed(seed)
        ours = LossNetwork(40, 4, "official").weights()
        assert all(torch.equal(a, b) for a, b in zip(ours, _official_meta_optimizer_weights(seed)))
    # pooled over 20 draws: std within 8 % of sqrt(2 / fan_out) (0.224 for width 40, 1.41 for the head);
    # nn.Linear's default (0.289 / 0.091 / 0.091), fan_in (0.71 / 0.22 / 0.22) or a = sqrt(5) are far outside
    for init, expect in (("official", lambda out, inp: (2 / out) ** 0.5),
                         ("torch_default", lambda out, inp: (1 / (3 * inp)) ** 0.5)):
        nets = [LossNetwork(40, 4, init).weights() for _ in range(20)]
        for i in range(5):
            w = torch.cat([n[i].detach().reshape(-1) for n in nets])
            out, inp = nets[0][i].shape
            assert abs(w.std().item() / expect(out, inp) - 1) < 0.08, (init, i, w.std().item())
    assert abs(torch.cat([n[4].reshape(-1) for n in [LossNetwork(40, 4).weights() for _ in range(20)]]).std() - 2 ** 0.5) < 0.12


def test_the_learned_loss_grid_is_logged_at_the_start_and_after_every_epoch(tmp_path):
    t = _trainer(str(tmp_path / "run"), epochs=2, loop="official")
    start = t.method.grid_values()
    t.fit()
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    grids = [e for e in events if e["event"] == "method"]
    assert len(grids) == 3
    keys = {f"dln_t{round(a * 1000):03d}_o{round(b * 1000):03d}" for a in GRID for b in GRID}
    assert keys <= set(grids[0]) and "dln_good_minus_bad" in grids[0] and "last_sig_true" in grids[-1]
    assert all(grids[0][k] == pytest.approx(v) for k, v in start.items())
    end = t.method.grid_values()
    assert all(grids[-1][k] == pytest.approx(v) for k, v in end.items())
    assert end["dln_t950_o050"] == pytest.approx(float(t.method.learned_loss(torch.tensor(0.95), torch.tensor(0.05))))
    assert end["dln_good_minus_bad"] == pytest.approx(end["dln_t950_o050"] - end["dln_t050_o950"])


def test_bad_params_and_data_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="val_batch"):
        validate_params(MethodSpec(name="l2t_dln", params={"loop": "fixed", "val_batch": 50}))
    with pytest.raises(ConfigError, match="dln_init"):
        validate_params(MethodSpec(name="l2t_dln", params={"dln_init": "xavier"}))
    params = METHODS["l2t_dln"].Params()
    with pytest.raises(ConfigError, match="val_fraction"):
        METHODS["l2t_dln"].check_data(params, build_data(DataConfig(name="digits", val_fraction=0.0)))


def test_a_batch_smaller_than_k_is_a_config_error(tmp_path):
    t = _trainer(str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="inner_steps=3"):
        t.method.training_step(t.data.train.batch(torch.arange(2)), t.ctx)


def test_inner_batches_cut_tensor_and_graph_batches_into_contiguous_parts():
    from kdforge.data.types import Graph

    x, y = torch.randn(7, 3), torch.arange(7)
    parts = inner_batches(Split(x, y).batch(torch.arange(7)), 3)
    assert [len(p) for p in parts] == [3, 2, 2]
    assert torch.equal(torch.cat([p.x for p in parts]), x) and torch.equal(torch.cat([p.y for p in parts]), y)
    graph = Graph(x=torch.randn(10, 3), edge_index=torch.tensor([[0, 1], [1, 0]]), y=torch.arange(10) % 2)
    nodes = torch.tensor([9, 2, 4, 7])
    batch = Split(nodes, graph.y[nodes], graph=graph).batch(torch.arange(4))
    halves = inner_batches(batch, 2)
    assert all(h.x is graph.x and h.extra == batch.extra for h in halves)  # every part runs on the whole graph
    assert [h.select.tolist() for h in halves] == [[9, 2], [4, 7]]
    assert torch.equal(torch.cat([h.y for h in halves]), graph.y[nodes])
