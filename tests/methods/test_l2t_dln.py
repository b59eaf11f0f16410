"""L2T-DLN as a method: one step against a hand-written bilevel update (the official main.py order), the teacher
and loss network really move, and a run stopped mid-way resumes bit-identical (LSTM memory, Adam state, DLN)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kdforge.models as models
from kdforge.config.schema import ModelConfig, OptimConfig, RecipeConfig, TrainConfig
from kdforge.data import DataConfig, build
from kdforge.engine import Trainer, latest_checkpoint, load_checkpoint, seed_everything
from kdforge.losses import dln_loss, preprocess_gradients
from kdforge.methods import METHODS, Setup
from kdforge.methods.l2t_dln import inner_batches

from support import Stop, full_and_resumed

K = 3


def _trainer(run_dir: str, epochs: int = 2, callbacks: tuple = ()) -> Trainer:
    bundle = build(DataConfig(name="digits", val_fraction=0.5, train_subset=300))
    seed_everything(0)
    student = models.build(ModelConfig(name="mlp", params={"hidden": [16]}), bundle.spec)
    method = METHODS["l2t_dln"](student, None, METHODS["l2t_dln"].Params(inner_steps=K, dln_width=8, lstm_hidden=8),
                                Setup.for_data(bundle.spec, bundle.train))
    recipe = RecipeConfig(seed=0, optim=OptimConfig(name="sgd", lr=0.1),
                          train=TrainConfig(epochs=epochs, progress=False, tensorboard=False))
    return Trainer(method, bundle, recipe, run_dir, batch_size=K * 10, callbacks=callbacks)


def _state(t: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in t.method.trainable().state_dict().items()}


def test_one_step_is_the_official_bilevel_update(tmp_path):
    t = _trainer(str(tmp_path / "run"), epochs=1)
    method = t.method
    before = _state(t)
    student0 = {n: p.detach().clone() for n, p in method.student.named_parameters()}
    lstm_copy = {n: p.detach().clone() for n, p in method.lstm.named_parameters()}
    captured = {}

    def first_step(batch, ctx):  # run the real step once, recording its validation batch, then stop
        draw = ctx.next_batch
        ctx.next_batch = lambda split: captured.setdefault("val", draw(split))
        real(batch, ctx)
        captured["batch"] = batch
        raise Stop

    real, method.training_step = method.training_step, first_step
    with pytest.raises(Stop):
        t.fit()
    batch, val = captured["batch"], captured["val"]

    # The same update written out by hand, the official main.py order.
    def run(weights):
        params = {n: p.clone().requires_grad_() for n, p in student0.items()}
        for part in inner_batches(batch, K):
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


def test_stop_and_resume_is_bit_identical(tmp_path):
    full, full_result, resumed, result = full_and_resumed(_trainer, tmp_path)
    assert result.resumed_from == 0  # the epoch whose checkpoint it resumed from
    state = load_checkpoint(latest_checkpoint(tmp_path / "cut" / "checkpoints")).state
    assert set(state["optimizers"]) == {"teacher"}
    a, b = _state(full), _state(resumed)
    assert a.keys() == b.keys() and {"loss_net.layers.0.weight", "lstm.cells.0.weight_ih", "lstm_c0"} <= set(a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert result.test == full_result.test
    last = result.history[-1]
    assert {"dln", "val_ce", "val_ce_before"} <= set(last)


def test_a_batch_smaller_than_k_is_a_config_error(tmp_path):
    from kdforge.errors import ConfigError

    t = _trainer(str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="inner_steps=3"):
        t.method.training_step(t.data.train.batch(torch.arange(2)), t.ctx)


def test_inner_batches_cut_tensor_and_graph_batches_into_contiguous_parts():
    from kdforge.data.types import Graph, Split

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
