"""Token-level distillation of a tiny GPT-2 with kdforge's losses: forward KL, reverse KL and GKD's generalized JSD.

A teacher and a smaller student GPT2LMHeadModel are built from `transformers` configs with random weights (nothing is
downloaded); the teacher is first fitted to next-token prediction on SST-2 sentences (../shared/data/sst2, the
project's word tokenizer and vocabulary), then a fresh student is distilled from it with each token-level loss, and
the student's next-token cross-entropy on the dev sentences is printed before and after. Without the data folder the
tokens are random ids. `transformers` is an optional extra, not a kdforge dependency.

The label shift of a causal LM is done here, by the caller, as the losses ask: logits at position i predict token
i + 1, so both models' logits are cut to [:, :-1] and the mask is "token i + 1 is not padding".

    PYTHONPATH=src python examples/token_kd_gpt.py [--teacher-steps 300] [--steps 150] [--losses forward_kl gkd]
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from kdforge.data.types import PAD_ID
from kdforge.losses import forward_kl_loss, generalized_jsd_loss, hard_cross_entropy, reverse_kl_loss

LOSSES: dict[str, Callable[..., Tensor]] = {
    "forward_kl": forward_kl_loss,
    "reverse_kl": reverse_kl_loss,
    "gkd": partial(generalized_jsd_loss, beta=0.5),
}


def tiny_gpt(vocab: int, max_len: int, width: int, layers: int, seed: int, init: float = 0.02) -> nn.Module:
    """A GPT2LMHeadModel with random weights from a tiny GPT2Config (`init`: the weights' std)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=max_len, n_embd=width, n_layer=layers, n_head=2,
                        initializer_range=init, bos_token_id=PAD_ID, eos_token_id=PAD_ID, pad_token_id=PAD_ID,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


def next_token_logits(model: nn.Module, ids: Tensor) -> tuple[Tensor, Tensor]:
    """(logits [B, L-1, V] of the tokens 1..L-1, mask [B, L-1]: the predicted token is not padding)."""
    logits = model(input_ids=ids, attention_mask=(ids != PAD_ID).long()).logits
    return logits[:, :-1], ids[:, 1:] != PAD_ID


def lm_loss(model: nn.Module, ids: Tensor) -> Tensor:
    """Next-token cross-entropy, mean over the real tokens."""
    logits, mask = next_token_logits(model, ids)
    return hard_cross_entropy(logits, ids[:, 1:], mask=mask)


def batches(ids: Tensor, batch_size: int, steps: int, seed: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [ids[torch.randint(0, len(ids), (batch_size,), generator=g)] for _ in range(steps)]


def train(model: nn.Module, data: list[Tensor], objective: Callable[[Tensor], Tensor], lr: float) -> list[float]:
    """AdamW steps of `model` on objective(ids) for each batch of ids; the losses per step."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for ids in data:
        loss = objective(ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def fit_teacher(teacher: nn.Module, data: list[Tensor], lr: float = 3e-3) -> list[float]:
    """Plain language-model training of the teacher."""
    return train(teacher, data, partial(lm_loss, teacher), lr)


def distill(student: nn.Module, teacher: nn.Module, data: list[Tensor], loss: str, lr: float = 3e-3,
            temperature: float = 1.0) -> list[float]:
    """Token-level distillation of `student` from `teacher` with LOSSES[loss] over the real tokens; the losses."""
    teacher.eval()

    def objective(ids: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_logits, _ = next_token_logits(teacher, ids)
        student_logits, mask = next_token_logits(student, ids)
        return LOSSES[loss](student_logits, teacher_logits, temperature=temperature, mask=mask)

    return train(student, data, objective, lr)


def sst2_ids(max_len: int, max_vocab: int) -> tuple[Tensor, Tensor, int]:
    """SST-2 train and dev sentences as token ids [N, max_len] (PAD_ID-padded) and the vocabulary size; random ids
    when the data folder is missing."""
    from kdforge.data.root import resolve_root
    from kdforge.data.sources.text import TextParams, encode, read_lines, vocabulary
    from kdforge.errors import DataError

    try:
        folder = resolve_root(None) / "sst2"
        train = read_lines(folder / "stsa.binary.train", 2, "utf-8")
        dev = read_lines(folder / "stsa.binary.dev", 2, "utf-8")
    except DataError as e:
        print(f"no SST-2 ({e}); random token ids instead")
        g = torch.Generator().manual_seed(0)
        return (torch.randint(2, max_vocab, (2000, max_len), generator=g),
                torch.randint(2, max_vocab, (200, max_len), generator=g), max_vocab)
    vocab = vocabulary(train[0], TextParams(max_len=max_len, max_vocab=max_vocab - 2))
    return encode(*train, vocab, max_len).x, encode(*dev, vocab, max_len).x, len(vocab) + 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=24)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    args = parser.parse_args(argv)
    train, dev, vocab = sst2_ids(args.max_len, args.vocab)
    teacher = tiny_gpt(vocab, args.max_len, width=128, layers=2, seed=0)
    fit = fit_teacher(teacher, batches(train, args.batch_size, args.teacher_steps, seed=1))
    with torch.no_grad():
        print(f"teacher: LM loss {fit[0]:.3f} -> {fit[-1]:.3f} (train batches), dev next-token CE "
              f"{lm_loss(teacher.eval(), dev).item():.3f}")
    for name in args.losses:
        student = tiny_gpt(vocab, args.max_len, width=48, layers=1, seed=2)
        with torch.no_grad():
            before = lm_loss(student, dev).item()
        curve = distill(student, teacher, batches(train, args.batch_size, args.steps, seed=3), name)
        with torch.no_grad():
            after = lm_loss(student.eval(), dev).item()
        print(f"student {name:>10}: distillation loss {curve[0]:.4f} -> {curve[-1]:.4f}, "
              f"dev next-token CE {before:.3f} -> {after:.3f}")


if __name__ == "__main__":
    main()
