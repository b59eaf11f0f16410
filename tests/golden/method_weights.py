"""Golden weights: every registered method trained for a few steps, the sha256 of what it trained.

`python tests/golden/method_weights.py` (from the repository root, PYTHONPATH=src) runs every case below and
writes tests/golden/method_weights.json: each case's fully resolved config (every default written out, so a later
change of a default or of an example config does not move the case) and the sha256 of the student's weights, of
the method's `trainable()` weights (the last checkpoint: student, connectors, the method's own parameters) and of
the teacher's. tests/test_golden_weights.py recomputes them: a refactor that changes any number fails there.

Cases: each method's example config (configs/) cut to a sliver, on scikit-learn's digits wherever the method runs on
images (graph methods on Cora); plus the teacher-output cache (augmented views replayed, top-k logits, tapped
features, the unlabeled split), InfoDrop teachers and students with their fine-tune phase, and `kdforge.distill`
on plain modules. Everything runs on one CPU thread. The file was generated on the code before the architecture
refactor (issue 21).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_suffix(".json")
#: cases slower than this (seconds, measured when the file was written) are marked slow in the test
SLOW_S = 4.0

# A sliver on digits: 300 training images (240 train + 60 val), 100 test, a few steps of each phase.
DIGITS = ["data.name=digits", "data.params={}", "data.train_subset=300", "data.test_subset=100",
          "data.val_fraction=0.2", "data.batch_size=64", "train.epochs=2"]
TEACHER = ["teacher.recipe.train.epochs=1"]
COMMON = ["train.progress=false", "train.tensorboard=false", "train.eval_every=1"]


def _case(config: str, *overrides: str, teacher: bool = True, digits: bool = True) -> dict[str, Any]:
    return {"config": config, "overrides": [*(DIGITS if digits else []), *(TEACHER if teacher else []), *overrides]}


LABEL_BUDGET = ["data.train_subset=600", "data.val_fraction=0.3", "data.label_budget.labeled=0.2",
                "data.batch_size=32"]
CORA = ["train.epochs=6", "train.eval_every=6", "train.checkpoint_every=1"]
ROUNDS = ["method.params.base_epochs=2", "method.params.round_epochs=2", "method.params.early_epoch=1"]
CACHE_AUG = ["data.augment.crop_padding=1", "data.augment.flip=true", "data.augment.mixup_alpha=0.4",
             "data.augment.cutmix_alpha=1.0", "data.augment.mix_prob=0.5"]

CASES: dict[str, dict[str, Any]] = {
    "ce": _case("digits_ce.yaml", teacher=False),
    "kd": _case("digits_kd.yaml"),
    "wsl": _case("digits_wsl.yaml"),
    "at": _case("fashion_mnist_at.yaml"),
    "crd": _case("fashion_mnist_crd.yaml", "method.params.nce_k=64"),
    "dfa": _case("fashion_mnist_dfa.yaml", "train.epochs=3", "method.params.search_epochs=1"),
    "dkd": _case("fashion_mnist_dkd.yaml", "method.params.warmup=1"),
    "fitnet": _case("fashion_mnist_fitnet.yaml"),
    "kdzero": _case("fashion_mnist_kdzero.yaml"),
    "l2t_dln": _case("fashion_mnist_l2t_dln.yaml", "data.val_fraction=0.5", "method.params.inner_steps=2",
                     teacher=False),
    "nst": _case("fashion_mnist_nst.yaml"),
    "pkt": _case("fashion_mnist_pkt.yaml"),
    "prokt": _case("fashion_mnist_prokt.yaml", "data.val_fraction=0.5"),
    "reviewkd": _case("fashion_mnist_reviewkd.yaml", "method.params.warmup_epochs=1"),
    "rkd": _case("fashion_mnist_rkd.yaml"),
    "sp": _case("fashion_mnist_sp.yaml"),
    "vid": _case("fashion_mnist_vid.yaml"),
    "slam": _case("fashion_mnist_slam.yaml", *LABEL_BUDGET, "method.params.min_val_samples=20"),
    "pseudo_soft": _case("digits_pseudo_soft.yaml", *LABEL_BUDGET),
    "pseudo_hard": _case("digits_pseudo_hard.yaml", *LABEL_BUDGET),
    "pseudo_threshold": _case("digits_pseudo_threshold.yaml", *LABEL_BUDGET, "method.params.threshold=0.3"),
    "forward_correction": _case("digits_forward_correction.yaml", *LABEL_BUDGET, "method.params.min_val_samples=20"),
    "glnn": _case("cora_glnn.yaml", *CORA, "teacher.recipe.train.epochs=3", digits=False, teacher=False),
    "pl": _case("cora_pl.yaml", *CORA, *ROUNDS, digits=False, teacher=False),
    "pl_threshold": _case("cora_pl_threshold.yaml", *CORA, *ROUNDS, "method.params.threshold=0.3", digits=False,
                          teacher=False),
    "cpl": _case("cora_cpl.yaml", *CORA, *ROUNDS, "method.params.top_k=20", digits=False, teacher=False),
    # The teacher-output cache: augmented views (crop, flip, mixup/cutmix) recorded for 2 epochs, cycled over 3.
    "kd+cache": _case("digits_kd.yaml", *CACHE_AUG, "teacher.source=cache", "teacher.cache.epochs=2", "train.epochs=3"),
    # top-k logits and a tapped feature, the live teacher past the recorded epoch
    "fitnet+cache_topk": _case("fashion_mnist_fitnet.yaml", "data.augment.flip=true", "teacher.source=cache",
                               "teacher.cache.storage=topk", "teacher.cache.k=3", "teacher.cache.after=live",
                               "teacher.cache.dtype=float32"),
    # the unlabeled split recorded too (its stream's seed)
    "pseudo_soft+cache": _case("digits_pseudo_soft.yaml", *LABEL_BUDGET, "data.augment.flip=true",
                               "teacher.source=cache", "teacher.cache.epochs=2"),
    # an InfoDrop teacher and student, each with its fine-tune phase (the schedule restarts)
    "kd+infodrop": _case("fashion_mnist_kd_infodrop.yaml", "teacher.model.infodrop.finetune_epochs=1",
                         "student.infodrop={layers: [{conv: features.0}], finetune_epochs: 1}",
                         "data.eval_corruptions=[gaussian_noise]"),
    # the Python API on plain modules (see _distill)
    "distill:kd": {"distill": {"method": "kd", "params": {"temperature": 2.0}}},
    "distill:kd+cache": {"distill": {"method": "kd", "params": {}, "augment": {"crop_padding": 1, "flip": True},
                                     "teacher_cache": {"epochs": 2}}},
}


# ---- what is compared ----------------------------------------------------------------------------------------
def digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors in name order: name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    from safetensors.torch import load_file

    return digest(load_file(str(path)))


def resolved_config(case: dict[str, Any]) -> dict[str, Any]:
    """The case's config with every default written out (output_dir and teacher.store_dir are set per run)."""
    from kdforge.api import load_config

    parsed = load_config(REPO / "configs" / case["config"], [*case["overrides"], *COMMON])
    cfg = parsed.model_dump(mode="json")
    cfg.pop("output_dir")
    if "val_fraction" not in parsed.data.model_fields_set:  # set or not matters (data sets with their own split)
        cfg["data"].pop("val_fraction")
    if cfg.get("teacher"):
        cfg["teacher"].pop("store_dir")
        if cfg["teacher"].get("recipe"):
            cfg["teacher"]["recipe"]["train"]["progress"] = False
    return cfg


def run_case(name: str, entry: dict[str, Any], work: Path, resume: bool = False,
             changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one case in `work` on one thread, with $KDFORGE_CACHE in `work/cache`; the digests of what it
    trained. `resume` continues the run folder work/run; `changes` updates the resolved config's teacher section
    (tests point teacher.cache at a saved cache)."""
    threads, cache = torch.get_num_threads(), os.environ.get("KDFORGE_CACHE")
    torch.set_num_threads(1)
    os.environ["KDFORGE_CACHE"] = str(work / "cache")
    try:
        if "distill" in entry:
            return _distill(entry["distill"], work)
        return _run(entry["resolved"], work, resume, changes or {})
    finally:
        torch.set_num_threads(threads)
        if cache is None:
            os.environ.pop("KDFORGE_CACHE")
        else:
            os.environ["KDFORGE_CACHE"] = cache


def _run(resolved: dict[str, Any], work: Path, resume: bool, changes: dict[str, Any]) -> dict[str, Any]:
    import kdforge
    from kdforge.api import parse_config

    data = copy.deepcopy(resolved)
    data["output_dir"] = str(work / "run")
    if data.get("teacher"):
        data["teacher"]["store_dir"] = str(work / "teachers")
        data["teacher"]["cache"].update(changes)
    cfg = parse_config(data)
    kdforge.run(cfg, resume=resume)
    run_dir = Path(cfg.run_dir)
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["checkpoint"]
    out = {"student": _file_digest(run_dir / "student" / "model.safetensors"),
           "trainable": _file_digest(run_dir / "checkpoints" / latest / "weights.safetensors")}
    teachers = sorted((work / "teachers").glob("*/model.safetensors")) if data.get("teacher") else []
    if teachers:
        assert len(teachers) == 1, teachers
        out["teacher"] = _file_digest(teachers[0])
        out["teacher_dir"] = teachers[0].parent.name  # api.teacher_dir's hash: existing teachers keep their folders
    return out


def _distill(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """`kdforge.distill` on plain nn.Sequential modules and sklearn's digits as tensors (no kdforge data or
    models involved), with a random (untrained) teacher: the API's own composition, checked."""
    import kdforge
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = torch.from_numpy(d.images).float().unsqueeze(1)[:400], torch.from_numpy(d.target).long()[:400]
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    kwargs: dict[str, Any] = {}
    if "augment" in spec:
        kwargs["augment"] = kdforge.AugmentConfig(**spec["augment"])
    if "teacher_cache" in spec:
        kwargs["teacher_cache"] = kdforge.TeacherCacheConfig(path=str(work / "cache"), **spec["teacher_cache"])
    kdforge.distill(student, teacher, (x[:300], y[:300]), (x[300:350], y[300:350]), (x[350:], y[350:]),
                    method=spec["method"], params=spec["params"], epochs=3, batch_size=64, eval_every=1,
                    optim=kdforge.OptimConfig(name="adamw", lr=3e-3),
                    schedule=kdforge.ScheduleConfig(name="cosine", warmup_epochs=1),
                    run_dir=work / "run", tensorboard=False, **kwargs)
    return {"student": digest(student.state_dict()), "teacher": digest(teacher.state_dict())}


# ---- files written by the code before the refactor, which later code must keep reading --------------------------
FILES = GOLDEN.parent / "v0"


def keep_files(work: Path, name: str) -> None:
    """Save what case `name` wrote that later code must read: for `kd` its student folder, its teacher folder and
    the checkpoint after epoch 0 (with a latest.json naming it, as a run killed then leaves it); for `kd+cache`
    its teacher-output cache."""
    out = FILES / name
    shutil.rmtree(out, ignore_errors=True)
    if name == "kd":
        shutil.copytree(work / "run" / "student", out / "student")
        teacher = next((work / "teachers").iterdir())
        shutil.copytree(teacher, out / "teachers" / teacher.name, ignore=shutil.ignore_patterns("run"))
        shutil.copytree(work / "run" / "checkpoints" / "epoch_0000", out / "run" / "checkpoints" / "epoch_0000")
        meta = json.loads((out / "run" / "checkpoints" / "epoch_0000" / "meta.json").read_text())
        pointer = {"checkpoint": "epoch_0000", "epoch": meta["epoch"], "batch": meta["batch"], "step": meta["step"]}
        (out / "run" / "checkpoints" / "latest.json").write_text(json.dumps(pointer))
    elif name == "kd+cache":
        (cache,) = (work / "cache" / "teacher_outputs").iterdir()
        shutil.copytree(cache, out / "cache" / cache.name)


def main(only: list[str]) -> None:
    """Regenerate the golden file (all cases, or `only` those named, keeping the others)."""
    import tempfile

    import kdforge.api  # noqa: F401  (imports are not part of any case's time)
    import sklearn.datasets  # noqa: F401
    import torch._dynamo  # noqa: F401  (the first optimizer step imports it: seconds, once per process)

    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    for name, case in CASES.items():
        if only and name not in only:
            continue
        entry = dict(case) if "distill" in case else {"resolved": resolved_config(case)}
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            entry["digests"] = run_case(name, entry, Path(tmp))
            if name in ("kd", "kd+cache"):
                keep_files(Path(tmp), name)
            entry["seconds"] = round(time.perf_counter() - t0, 1)
        golden[name] = entry
        print(f"{name}: {entry['seconds']} s", flush=True)
    GOLDEN.write_text(json.dumps({k: golden[k] for k in CASES if k in golden}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
