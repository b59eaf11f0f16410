"""Workers of a distiller search on an Optuna storage (ask/tell), and the command that starts them.

Every worker, in this process, another process or on another machine, runs the same loop against the storage:
fail the trials of dead workers (their heartbeat stopped; each is re-queued once with the same genome), ask for a
candidate (the sampler breeds it from what the storage holds), evaluate it, tell the result. A trial's run folder
is named after the trial it retries, so the retry resumes the killed worker's last checkpoint: nothing is lost
and no candidate is evaluated to completion twice. A worker stops when the budget is used and no trial is left
running or waiting, so a search killed at any point resumes by starting it again.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdforge.errors import require_extra

require_extra("optuna", "search", "the distiller search")  # one line naming the extra, before the imports below

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from kdforge.errors import ConfigError
from kdforge.fileio import atomic_write_text
from kdforge.search.evolve import EvolutionSampler, distributions, generation, is_rejected
from kdforge.search.space import SearchConfig, load_search_config, program, program_key

POLL_S = 1.0  # how often a worker with nothing to ask checks the trials still running elsewhere
MAX_RETRY = 2  # re-queues of a killed trial before it counts as lost


def storage(cfg: SearchConfig | None, url: str, create: bool = True) -> RDBStorage:
    """The RDB storage with heartbeats (a dead worker's trial is failed after `grace_s` and re-queued); a
    ConfigError naming the URL when it cannot be opened (or, with create=False, an SQLite file does not exist).
    Without `cfg` (a report reading a study), no heartbeats."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not create and not path.is_file():
            raise ConfigError(f"storage {url}: no such file; start the search first (kdforge search CONFIG) or give "
                              "its --storage URL")
        path.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith(("postgresql://", "postgresql+psycopg2://")):
        require_extra("psycopg2", "postgres", f"storage {url}")
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            beats = {} if cfg is None else {"heartbeat_interval": cfg.heartbeat_s, "grace_period": cfg.grace_s}
            return RDBStorage(url, engine_kwargs=kwargs, **beats,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    except (SQLAlchemyError, ImportError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"storage {url}: cannot be opened ({first}); give an Optuna database URL such as "
                          "sqlite:///runs/search.db or postgresql+psycopg2://user@host/db") from None


def space_signature(cfg: SearchConfig) -> str:
    """What must agree for workers to join one study: the genes, the evolution and the proxy (not the budget: a
    finished search is extended by running it again with more `evolution.trials`)."""
    evolution = cfg.evolution.model_dump(mode="json", exclude={"trials"})
    return json.dumps({"space": cfg.space.model_dump(mode="json"), "evolution": evolution,
                       "proxy": cfg.proxy.model_dump(mode="json")}, sort_keys=True)


def open_study(cfg: SearchConfig, url: str, create: bool = True) -> optuna.Study:
    """The study `cfg.name` on `url`, created (with its seed programs queued) when new; a ConfigError when the
    study there was started with another search space, evolution or proxy."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = storage(cfg, url, create)
    if not create and cfg.name not in optuna.get_all_study_names(store):
        raise ConfigError(f"no study {cfg.name!r} in {url}: start the search first (kdforge search CONFIG)")
    study = optuna.create_study(study_name=cfg.name, storage=store, direction="maximize",
                                sampler=EvolutionSampler(cfg.space, cfg.evolution), load_if_exists=True)
    signature = space_signature(cfg)
    stored = study.user_attrs.get("signature")
    if stored is None:
        study.set_user_attr("signature", signature)
        for genome in cfg.evolution.seed_programs:
            study.enqueue_trial(genome, skip_if_exists=True)
    elif stored != signature:
        raise ConfigError(f"study {cfg.name!r} in {url} was started with another space/evolution/proxy; use its "
                          "config, or another study name (name: ...)")
    if create:
        study.set_user_attr("budget", cfg.evolution.trials)  # what a report without the config shows progress of
    return study


def open_study_by_name(name: str, url: str) -> optuna.Study:
    """The existing study `name` on `url`, for reading (a report): no config, so no check of its space."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = storage(None, url, create=False)
    names = optuna.get_all_study_names(store)
    if name not in names:
        raise ConfigError(f"no study {name!r} in {url}; it holds {', '.join(map(repr, names)) or 'no study'}")
    return optuna.load_study(study_name=name, storage=store)


def slot_count(trials: list[FrozenTrial], before: int | None = None) -> int:
    """Budget used: trials finished, running or queued, before trial number `before` when given; a failed trial
    uses no slot (its retry holds it), and neither does a trial asked past the budget."""
    return sum(1 for t in trials if t.state != TrialState.FAIL and not t.user_attrs.get("over_budget")
               and (before is None or t.number < before))


@contextmanager
def heartbeat(store: RDBStorage, trial: Trial, interval: int) -> Iterator[None]:
    """Record the trial's heartbeat every `interval` s while the block runs (what optimize() does for itself)."""
    stop = threading.Event()
    trial_id = trial._trial_id  # no public accessor; the storage's heartbeat API is keyed by it

    def beat() -> None:
        while True:
            store.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def progress_line(study: optuna.Study, population: int, budget: int) -> str:
    """generation, candidates finished of the budget, best fitness, rejected count."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    valid = [t for t in done if t.state == TrialState.COMPLETE]
    best = max((t.value for t in valid), default=None)  # type: ignore[type-var]
    gen = max((generation(t.number, population) for t in done), default=0)
    return (f"generation {gen} | {len(done)}/{budget} evaluated | best fitness "
            f"{'-' if best is None else f'{best:.2f}'} | rejected {sum(is_rejected(t) for t in done)}")


def work(cfg: SearchConfig, experiment: Path, overrides: list[str], url: str, worker: str = "w0",
         verbose: bool = True) -> int:
    """One worker's loop until the search is done; returns how many candidates it evaluated."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    study = open_study(cfg, url)
    evaluator = make_evaluator(cfg, experiment, overrides)
    dists, budget, evaluated = distributions(cfg.space), cfg.evolution.trials, 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and slot_count(trials) >= budget:
            if any(t.state == TrialState.RUNNING for t in trials):  # finished elsewhere, or failed and re-queued
                time.sleep(POLL_S)
                continue
            return evaluated
        with warnings.catch_warnings():  # heartbeats are recorded by `heartbeat` below, as optimize() would
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask(dists)
        # at once: a trial that never recorded a heartbeat is never found stale, so one whose worker died before
        # its first beat would hold the search open for ever
        study._storage.record_heartbeat(trial._trial_id)  # noqa: SLF001
        if not _in_budget(study, trial, budget):
            continue
        evaluated += _evaluate(study, trial, cfg, evaluator, worker)
        if verbose:
            print(f"[{worker}] trial {trial.number}: {trial.user_attrs.get('summary', '')}\n"
                  f"[{worker}] {progress_line(study, cfg.evolution.population, budget)}", flush=True)


def _in_budget(study: optuna.Study, trial: Trial, budget: int) -> bool:
    """False (and the trial closed as over budget) when workers asked past the budget at the same time."""
    frozen = study._storage.get_trial(trial._trial_id)  # noqa: SLF001  (system attrs of a just-asked trial)
    if "failed_trial" in frozen.system_attrs or "fixed_params" in frozen.system_attrs:
        return True  # a retry or a queued seed program holds a slot already
    if slot_count(study.get_trials(deepcopy=False), before=trial.number) < budget:
        return True
    trial.set_user_attr("over_budget", True)
    study.tell(trial, state=TrialState.FAIL)
    return False


def _evaluate(study: optuna.Study, trial: Trial, cfg: SearchConfig, evaluator: Any, worker: str) -> int:
    params = program(cfg.space, trial.params)
    key = program_key(params)
    frozen = study._storage.get_trial(trial._trial_id)  # noqa: SLF001
    origin = frozen.system_attrs.get("failed_trial", trial.number)  # a retry resumes the killed trial's folder
    for name, value in {"program": params, "key": key, "worker": f"{socket.gethostname()}:{os.getpid()}:{worker}",
                        "generation": generation(trial.number, cfg.evolution.population)}.items():
        trial.set_user_attr(name, value)
    same = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("key") == key]
    if same:  # bred again despite the re-breeding: its fitness is known, nothing is trained
        trial.set_user_attr("duplicate_of", same[0].number)
        trial.set_user_attr("summary", f"duplicate of trial {same[0].number}")
        study.tell(trial, same[0].value)
        return 0
    t0 = time.perf_counter()
    with heartbeat(study._storage, trial, cfg.heartbeat_s):  # noqa: SLF001
        outcome = evaluator(params, cfg.out_dir / "trials" / f"{origin:05d}")
    trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
    trial.set_user_attr("curve", outcome.curve)
    trial.set_user_attr("warmup_losses", outcome.warmup_losses)
    if outcome.resumed_from is not None:
        trial.set_user_attr("resumed_from_epoch", outcome.resumed_from)
    if outcome.fitness is None:
        trial.set_user_attr("rejected", outcome.rejected)
        trial.set_user_attr("summary", f"rejected ({outcome.rejected})"[:300])
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("summary", f"fitness {outcome.fitness:.2f} ({_describe(params)})")
        study.tell(trial, outcome.fitness)
    return 1


def _describe(params: dict[str, Any]) -> str:
    b = params["branches"][0]
    where = b["knowledge"] if b["knowledge"] == "logits" else f"{b['student']}|{b['teacher']}"
    return f"{where}: {' -> '.join(b['transforms']) or 'identity'} -> {b['distance']} x {b['weight']:g}"


def make_evaluator(cfg: SearchConfig, experiment: Path, overrides: list[str]) -> Any:
    """The proxy evaluator: data built and the teacher loaded (or trained, once) in this process."""
    from kdforge.api import build_data, prepare_teacher
    from kdforge.api import load_config
    from kdforge.search.evaluate import Evaluator, proxy_bundle

    exp = load_config(experiment, overrides)
    if exp.teacher is None:
        raise ConfigError(f"{experiment}: a distiller search needs a teacher section")
    bundle = build_data(exp.data)
    teacher = prepare_teacher(exp, bundle)
    return Evaluator(experiment, list(overrides), exp, proxy_bundle(bundle, cfg.proxy, cfg.evolution.seed), teacher,
                     cfg.proxy)


def _spawned_worker(config: str, overrides: list[str], url: str, worker: str) -> None:
    cfg, experiment = load_search_config(config, overrides)
    work(cfg, experiment, cfg.overrides, url, worker)


def search(config: str | Path, overrides: list[str] = (), workers: int = 1, storage_url: str | None = None) -> str:
    """Run (or resume, or join with `storage_url`) the search of `config` with `workers` processes here; returns
    the final progress line and writes the best programs (best.yaml, distill.yaml) into the search folder."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    cfg, experiment = load_search_config(config, list(overrides))
    url = storage_url or cfg.storage_url
    study = open_study(cfg, url)  # created (and checked) once before any worker starts
    make_evaluator(cfg, experiment, cfg.overrides)  # trains the teacher once, here, when it is not saved yet
    if workers == 1:
        work(cfg, experiment, cfg.overrides, url)
    else:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_spawned_worker, args=(str(config), list(overrides), url, f"w{i}"))
                 for i in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode != 0 for p in procs):
            raise RuntimeError(f"search workers exited with codes {[p.exitcode for p in procs]}")
    best = write_best(study, cfg, experiment)
    line = progress_line(study, cfg.evolution.population, cfg.evolution.trials)
    return line if best is None else f"{line}\nbest program: {best.parent / 'best.yaml'}; kdforge distill {best}"


def write_best(study: optuna.Study, cfg: SearchConfig, experiment: Path) -> Path | None:
    """best.yaml (the best program as a `method:` section) and distill.yaml (the experiment with it, ready for
    `kdforge distill`) in the search folder; None when no candidate was valid."""
    import yaml

    from kdforge.api import load_config
    from kdforge.config.load import dump_config

    valid = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "program" in t.user_attrs]
    if not valid:
        return None
    best = max(valid, key=lambda t: t.value)  # type: ignore[arg-type,return-value]
    method = {"name": "kdzero", "params": best.user_attrs["program"]}
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    header = f"# best of study {cfg.name!r}: trial {best.number}, proxy fitness {best.value:.2f}\n"
    atomic_write_text(out / "best.yaml", header + yaml.safe_dump({"method": method}, sort_keys=False))
    exp = load_config(experiment, [*cfg.overrides, "method.name=kdzero", f"method.params={json.dumps(method['params'])}"])
    atomic_write_text(out / "distill.yaml", header + dump_config(exp))
    return out / "distill.yaml"
