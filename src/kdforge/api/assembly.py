"""The assembly point: everything one run needs, composed in one place from an experiment config or from
`distill()`'s arguments. It is the only code below the applications that reads the YAML schema: it checks names
against the registries, translates each section into the plain settings of the layer that takes it
(`kdforge.api.settings`), builds the data, the teacher source and the method, and wires a teacher cache's
recorded views straight into the batches the loader draws. `run`, `distill`, `build_teacher_cache`,
`train_teacher`, `compare`, the search, the analyses, the plans and every CLI command go through it.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from torch import nn

import kdforge.data as data_mod
import kdforge.methods as methods
import kdforge.models as models
from kdforge.api import settings
from kdforge.api.checks import check_models
from kdforge.api.finetune import finetune_phase, finetune_recipe
from kdforge.api.names import check_names
from kdforge.api.teachers import teacher_agreement, teacher_dir, teacher_logits_dir
from kdforge.config.schema import DataConfig, ExperimentConfig, MethodConfig, ModelConfig
from kdforge.data import Batches, DataBundle, DataSpec
from kdforge.data.corruptions import check_images
from kdforge.engine import Runtime, Trainer, seed_everything
from kdforge.engine.lock import RunLock
from kdforge.engine.metrics import corruption_metrics
from kdforge.engine.settings import Recipe
from kdforge.engine.result import EpochCallback, ExtraMetrics
from kdforge.methods import Method, MethodSpec, Setup
from kdforge.errors import CheckpointError, TrainingDiverged
from kdforge.registry import TEACHERS
from kdforge.teachers import TeacherSource
from kdforge.teachers.cache import (
    CachedTeacher, CacheRequest, CacheSettings, RecordedViews, TeacherCache, open_or_build,
)
from kdforge.teachers.logits import TeacherLogits


@dataclass(frozen=True, eq=False)
class Assembly:
    """A run, composed: its runtime and data, the method around the student (and the teacher source it reads),
    the batches the loader draws (recorded views wired in), the engine's settings and the run folder. Use it as a
    context manager: leaving gives the teacher model back as it was found (`source.release()`)."""

    runtime: Runtime
    bundle: DataBundle
    student: nn.Module
    method: Method
    teacher: nn.Module | None  # the teacher network: agreement metrics and the summary
    source: TeacherSource | None
    batches: Batches
    recipe: Recipe
    run_dir: Path
    label: str
    eval_batch_size: int = 1000
    extra_metrics: ExtraMetrics | None = None
    cache: TeacherCache | None = None
    finetune_key: str = "student.infodrop"  # the config key InfoDrop's fine-tune phase is reported under

    def trainer(self, callbacks: Sequence[EpochCallback] = ()) -> Trainer:
        """The engine's loop over this run; InfoDrop's fine-tune phase joined when the student has one."""
        trainer = Trainer(self.method, self.batches, self.recipe, self.run_dir, eval_batch_size=self.eval_batch_size,
                          label=self.label, callbacks=callbacks, runtime=self.runtime, extra_metrics=self.extra_metrics)
        finetune_phase(self.student, trainer, self.finetune_key)
        return trainer

    def release(self) -> None:
        if self.source is not None:
            self.source.release()

    def __enter__(self) -> "Assembly":
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


# ---- the parts every entry point shares ---------------------------------------------------------------------
def run_lock(run_dir: Path, runtime: Runtime) -> AbstractContextManager[Any]:
    """The run folder's lock, held by the main process around everything a run writes there (the API is its one
    owner: the engine takes none)."""
    return RunLock(run_dir) if runtime.is_main else nullcontext()


def build_data(cfg: DataConfig) -> DataBundle:
    """The data a `data:` section describes."""
    return data_mod.build(settings.data(cfg))


def build_model(cfg: ModelConfig, spec: DataSpec, key_path: str = "model") -> nn.Module:
    """A fresh model a `model:` section describes (`student`, `teacher.model`), for the data `spec`."""
    return models.build(settings.model(cfg), spec, key_path)


def check_method(cfg: MethodConfig, bundle: DataBundle | None = None) -> None:
    """A `method:` section's name and params checked (ConfigError naming the key), and with `bundle` whether the
    method can use that data, before anything is trained."""
    spec = settings.method(cfg)
    methods.validate_params(spec)
    if bundle is not None:
        methods.check_data(spec, bundle)


def build_method(name: str, params: dict[str, Any], student: nn.Module, source: TeacherSource | None,
                 bundle: DataBundle, label_smoothing: float) -> Method:
    return methods.build(MethodSpec(name, params), student, source,
                         Setup.for_data(bundle.spec, bundle.train, label_smoothing))


def _recorded_views(source: CachedTeacher, bundle: DataBundle, request: CacheRequest, runtime: Runtime,
                    rebuild: bool = False, progress: bool = True) -> TeacherCache:
    """Open (or build, on the main process) the cache `request` asks for, with the features the method tapped
    while it was built: `source` reads its outputs from it, and it goes to the loader as the recorded views."""
    return open_or_build(source, bundle, request, runtime.is_main, runtime.barrier, rebuild=rebuild,
                         progress=progress and runtime.is_main)


# ---- from an experiment config ------------------------------------------------------------------------------
def assemble(cfg: ExperimentConfig, *, bundle: DataBundle | None = None, teacher: nn.Module | None = None,
             teacher_logits: TeacherLogits | None = None, for_cache: bool = False,
             rebuild_cache: bool = False) -> Assembly:
    """The run `cfg` describes. `bundle` and `teacher` reuse data and a teacher already loaded (a comparison,
    a search); `teacher_logits` memoizes the teacher's val/test logits across runs. `for_cache` assembles what
    building a teacher cache needs: the teacher even for a method without one, replayed from a cache."""
    check_names(cfg)
    runtime = Runtime.from_env(cfg.train.device)
    bundle = bundle or build_data(cfg.data)
    check_method(cfg.method, bundle)  # bad data for this method fails here, before a teacher is trained
    check_images(cfg.data.eval_corruptions, bundle.spec)
    if teacher is None and (for_cache or _wants_teacher(cfg)):
        teacher = prepare_teacher(cfg, bundle)
    seed_everything(cfg.seed)
    student = build_model(cfg.student, bundle.spec, "student")
    check_models(student, teacher, bundle.train, bundle.spec.num_classes, ("student", "teacher.model"))
    source = None if teacher is None else _source(cfg, teacher, for_cache)
    with _released_on_error(source):
        method = build_method(cfg.method.name, cfg.method.params, student, source, bundle, cfg.train.label_smoothing)
        needs = methods.METHODS[cfg.method.name].needs_teacher
        cache = None
        if isinstance(source, CachedTeacher) and (needs or for_cache):
            cache = _recorded_views(source, bundle, cache_request(cfg, bundle, source.paths), runtime,
                                    rebuild_cache, cfg.train.progress)
    extra = None if teacher is None else teacher_agreement(teacher_logits or TeacherLogits(teacher_logits_dir()),
                                                          str(teacher_dir(cfg)), teacher, bundle,
                                                          cfg.data.eval_batch_size, runtime.device)
    finetune = cfg.student.infodrop.finetune_epochs if cfg.student.infodrop is not None else 0
    return Assembly(runtime=runtime, bundle=bundle, student=student, method=method, teacher=teacher, source=source,
                    batches=Batches(bundle, cfg.data.batch_size, settings.augment(cfg.data.augment),
                                    None if cache is None else RecordedViews(cache, cfg.teacher.cache.after)),
                    recipe=finetune_recipe(settings.recipe(cfg.recipe), finetune), run_dir=Path(cfg.run_dir),
                    label=f"{cfg.method.name} seed {cfg.seed}", eval_batch_size=cfg.data.eval_batch_size,
                    extra_metrics=extra, cache=cache)


def _source(cfg: ExperimentConfig, teacher: nn.Module, for_cache: bool) -> TeacherSource:
    """The registered teacher source `teacher.source` names (the cache, to build one) around the teacher."""
    assert cfg.teacher is not None
    return TEACHERS["cache" if for_cache else cfg.teacher.source].from_model(teacher, settings.cache(cfg.teacher.cache))


@contextmanager
def _released_on_error(source: TeacherSource | None) -> Iterator[None]:
    """Give the teacher model back as it was found when assembling fails after its source was built."""
    try:
        yield
    except BaseException:
        if source is not None:
            source.release()
        raise


def cache_request(cfg: ExperimentConfig, bundle: DataBundle, features: Sequence[str] = ()) -> CacheRequest:
    """What a teacher cache for this experiment must hold: its training splits' views under the run's
    augmentation, seed and batch size, and the features `features` the method taps."""
    assert cfg.teacher is not None
    splits = ("train", "unlabeled") if bundle.unlabeled is not None else ("train",)
    return CacheRequest(settings.cache(cfg.teacher.cache), settings.augment(cfg.data.augment), splits, tuple(features),
                        cfg.data.batch_size, cfg.seed)


def _wants_teacher(cfg: ExperimentConfig) -> bool:
    """The method needs the teacher, or it is already saved (then a student trained alone is still compared
    with it: agreement and KL); a teacher is never trained only for those metrics."""
    if cfg.teacher is None:
        return False
    return methods.METHODS[cfg.method.name].needs_teacher or (teacher_dir(cfg) / "model.json").exists()


# ---- a config's teacher: loaded, or trained once from its recipe ----------------------------------------------
def prepare_teacher(cfg: ExperimentConfig, bundle: DataBundle) -> nn.Module:
    """Load the teacher, training it first from its recipe when no saved copy exists yet."""
    assert cfg.teacher is not None
    path = teacher_dir(cfg)
    if (path / "model.json").exists():
        model, saved, spec, _ = models.load_model_with_info(path)
        if spec != bundle.spec:
            raise CheckpointError(f"teacher {path} was trained on {spec}, but the data is {bundle.spec}")
        if saved != settings.model(cfg.teacher.model):
            raise CheckpointError(f"teacher {path} is a {saved.name} {saved.params}, but teacher.model is "
                                  f"{cfg.teacher.model.name} {cfg.teacher.model.params}; make them agree")
        return model
    if cfg.teacher.recipe is None:
        raise CheckpointError(f"teacher checkpoint {path} does not exist; train it first or give teacher.recipe")
    return train_teacher(cfg, bundle, path)


def assemble_teacher(cfg: ExperimentConfig, bundle: DataBundle, path: Path) -> Assembly:
    """Training `cfg`'s teacher from `teacher.recipe` into `path`: the `ce` method on a fresh teacher model."""
    assert cfg.teacher is not None and cfg.teacher.recipe is not None
    infodrop = cfg.teacher.model.infodrop
    recipe = finetune_recipe(settings.recipe(cfg.teacher.recipe), infodrop.finetune_epochs if infodrop else 0)
    seed_everything(recipe.seed)
    model = build_model(cfg.teacher.model, bundle.spec, "teacher.model")
    check_models(model, None, bundle.train, bundle.spec.num_classes, ("teacher.model", ""))
    method = build_method("ce", {}, model, None, bundle, recipe.train.label_smoothing)
    return Assembly(runtime=Runtime.from_env(recipe.train.device), bundle=bundle, student=model, method=method,
                    teacher=None, source=None, batches=Batches(bundle, cfg.data.batch_size,
                                                               settings.augment(cfg.data.augment)),
                    recipe=recipe, run_dir=path / "run", label=f"teacher {cfg.teacher.model.name}",
                    eval_batch_size=cfg.data.eval_batch_size, finetune_key="teacher.model.infodrop")


def train_teacher(cfg: ExperimentConfig, bundle: DataBundle, path: Path) -> nn.Module:
    """Train `cfg`'s teacher from its recipe and save it in `path` (with its test and val metrics)."""
    assert cfg.teacher is not None
    a = assemble_teacher(cfg, bundle, path)
    try:
        with run_lock(a.run_dir, a.runtime):
            result = a.trainer().fit(overwrite=True)
    except TrainingDiverged as e:
        raise TrainingDiverged(f"training the teacher {cfg.teacher.model.name} from teacher.recipe: {e} "
                               "(the keys are under teacher.recipe)") from None
    if bundle.test is not None:  # the teacher's own robustness, in its model.json
        result.test.update(corruption_metrics(a.student, bundle.test, cfg.data.eval_corruptions,
                                              cfg.data.eval_batch_size, a.runtime.device))
    if a.runtime.is_main:
        models.save_model(path, a.student, settings.model(cfg.teacher.model), bundle.spec,
                          extra={"test": dict(result.test), "val": dict(result.val)})
    a.runtime.barrier()
    return a.student.eval()


# ---- from distill()'s arguments -----------------------------------------------------------------------------
def assemble_distill(student: nn.Module, teacher: nn.Module | None, bundle: DataBundle, *, method: str,
                     params: dict[str, Any], recipe: Recipe, batches: Batches, run_dir: Path, eval_batch_size: int,
                     teacher_cache: CacheSettings | None, teacher_metrics: bool) -> Assembly:
    """The run `kdforge.distill` describes: the caller's modules on the caller's tensors."""
    runtime = Runtime.from_env(recipe.train.device)
    source: TeacherSource | None = None
    if teacher is not None:
        source = TEACHERS["live" if teacher_cache is None else "cache"].from_model(teacher, teacher_cache)
    with _released_on_error(source):
        built = build_method(method, params, student, source, bundle, recipe.train.label_smoothing)
        cache = None
        if isinstance(source, CachedTeacher):
            request = CacheRequest(source.cfg, batches.augment, ("train",), tuple(source.paths), batches.size,
                                   recipe.seed)
            cache = _recorded_views(source, bundle, request, runtime, progress=recipe.train.progress)
    extra = (teacher_agreement(TeacherLogits(), "teacher", teacher, bundle, eval_batch_size, runtime.device)
             if teacher is not None and teacher_metrics else None)
    return Assembly(runtime=runtime, bundle=bundle, student=student, method=built, teacher=teacher, source=source,
                    batches=batches if cache is None else replace(batches,
                                                                  views=RecordedViews(cache, teacher_cache.after)),
                    recipe=recipe, run_dir=run_dir,
                    label=method, eval_batch_size=eval_batch_size, extra_metrics=extra, cache=cache)

