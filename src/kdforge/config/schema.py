"""The experiment schema: one frozen pydantic model per YAML section; unknown keys are errors."""
from __future__ import annotations

from string import Formatter
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdforge.options import describe_errors
from kdforge.errors import ConfigError


ModelMetaclass = type(BaseModel)  # pydantic's metaclass, reached without importing its private module


class _OneLineErrors(ModelMetaclass):  # type: ignore[misc,valid-type]
    """Construction from Python (`OptimConfig(name="adm")`) raises one ConfigError line naming `section.key`.

    Done in the metaclass's __call__, not in __init__: pydantic routes nested validation through a custom
    __init__, which would lose the key paths that loading a whole config reports."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as err:
            section = getattr(cls, "section", "")
            unknown = [e["loc"][0] for e in err.errors() if e["type"] == "extra_forbidden" and len(e["loc"]) == 1]
            if unknown:  # the commonest mistake: a misspelled key; say which keys exist
                key = ".".join(p for p in (section, str(unknown[0])) if p)
                raise ConfigError(f"{key}: unknown key; allowed: {', '.join(sorted(cls.model_fields))}") from None
            raise ConfigError(describe_errors(err, section)) from None


class StrictModel(BaseModel, metaclass=_OneLineErrors):
    """A config section: unknown keys and non-finite numbers are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    section: ClassVar[str] = ""


class AugmentConfig(StrictModel):
    """Batch augmentation, applied to tensors. mixup/cutmix follow "Revisit the Power of Vanilla KD" (2023)."""

    section: ClassVar[str] = "data.augment"
    crop_padding: int = Field(0, ge=0, description="random crop after zero padding by this many pixels; 0 = off")
    flip: bool = Field(False, description="random horizontal flip")
    mixup_alpha: float = Field(0.0, ge=0, description="Beta(a, a) mixup; 0 = off")
    cutmix_alpha: float = Field(0.0, ge=0, description="Beta(a, a) cutmix; 0 = off")
    mix_prob: float = Field(1.0, ge=0, le=1, description="probability a batch is mixed when mixing is on")


class LabelBudget(StrictModel):
    """Keep the labels of only part of the training split (stratified by class, from `seed`); the rest becomes
    the unlabeled part, whose labels training never sees (they stay for analysis: pseudo-label accuracy)."""

    section: ClassVar[str] = "data.label_budget"
    labeled: float = Field(gt=0, description="fraction (below 1) of the training split that keeps its labels, or a "
                                             "count of samples (1 or more)")
    seed: int = Field(0, description="seed of the labeled/unlabeled cut, fixed across training seeds")


#: Test-set corruptions (`data.eval_corruptions`); kdforge.data.corruptions implements each, at a fixed severity.
CorruptionName = Literal["gaussian_noise", "gaussian_blur", "patch_shuffle"]


class DataConfig(StrictModel):
    section: ClassVar[str] = "data"
    name: str
    root: str | None = Field(None, description="data folder; default $KDFORGE_DATA, else ../shared/data")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of train carved out for validation")
    split_seed: int = Field(0, description="seed of the validation split, fixed across training seeds")
    train_subset: int | None = Field(None, gt=0, description="keep only this many training samples")
    test_subset: int | None = Field(None, gt=0, description="keep only this many test samples")
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(1000, gt=0)
    augment: AugmentConfig = AugmentConfig()
    label_budget: LabelBudget | None = Field(None, description="keep only some labels; the rest is unlabeled")
    params: dict[str, Any] = Field(default_factory=dict, description="data-set specific options")
    eval_corruptions: list[CorruptionName] = Field(default_factory=list, description=(
        "also evaluate on corrupted copies of the test split (image tensors only), each at its fixed severity and "
        "seed (kdforge.data.corruptions); adds top1@<name> to summary.json's test metrics"))


class InfoDropLayer(StrictModel):
    section: ClassVar[str] = "model.infodrop.layers"
    conv: str = Field(description="module path of a Conv2d: its input's patches are scored")
    output: str | None = Field(None, description="module path whose output is masked (the conv's ReLU, or a max-pool "
                                                 "after it, whose window then min-pools the drop probability); "
                                                 "default: the conv itself")


class InfoDropConfig(StrictModel):
    """Informative Dropout (Shi et al., ICML 2020) on chosen conv layers, active in training mode only; defaults
    are the official code's."""

    section: ClassVar[str] = "model.infodrop"
    layers: list[InfoDropLayer] = Field(min_length=1)
    drop_rate: float = Field(1.5, gt=0, description="positions drawn for dropping per map, times H*W (with replacement)")
    temperature: float = Field(0.03, gt=0, description="sharpening of the patch likelihood: p^(1/T)")
    bandwidth: float = Field(1.0, gt=0, description="Gaussian kernel bandwidth h of the patch-likelihood estimate")
    radius: int = Field(3, ge=1, description="neighbour offsets (i, j) are drawn from [-radius, radius]^2")
    samples: int = Field(9, ge=1, description="neighbour offsets drawn per forward pass")
    finetune_epochs: int = Field(0, ge=0, description=(
        "after the run's epochs, N more without InfoDrop, as the official second run does (finetune_wo_infodrop: "
        "20 epochs after 100): the schedule runs again, compressed to those epochs, and the optimizer state "
        "(momentum) starts afresh; 0 = none"))
    finetune_lr_factor: float = Field(1.0, gt=0, description=(
        "the fine-tune phase's lr relative to the recipe's (official: 1.0, the same --learning_rate)"))


class ModelConfig(StrictModel):
    section: ClassVar[str] = "model"
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    infodrop: InfoDropConfig | None = Field(None, description="Informative Dropout on some conv layers (training only)")


class OptimConfig(StrictModel):
    """`sgd` (momentum, nesterov, L2 weight decay), `adam` (Kingma & Ba; weight decay added to the gradient, i.e.
    L2 as torch.optim.Adam does it) or `adamw` (Loshchilov & Hutter; decoupled weight decay)."""

    section: ClassVar[str] = "optim"
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    no_decay_norm_bias: bool = Field(False, description=(
        "weight decay 0 on normalisation layers' weights and biases (BatchNorm, LayerNorm, GroupNorm, any *Norm "
        "class) and on every bias; the rest decays by weight_decay (two param groups, the BERT/timm recipe)"))


class ScheduleConfig(StrictModel):
    """Per-step learning-rate schedule, defined in epochs. `onecycle` is OneCycleLR's policy (Smith & Topin 2018):
    cosine from lr/div_factor up to lr over the first pct_start of all steps, then cosine down to
    lr/(div_factor*final_div_factor); momentum is not cycled. `linear` is the usual transformer schedule: the
    warm-up, then lr falls linearly to min_lr at the end of the last step (Hugging Face's
    get_linear_schedule_with_warmup, whose warm-up starts at 0 rather than lr / W)."""

    section: ClassVar[str] = "schedule"
    name: Literal["constant", "step", "multistep", "cosine", "onecycle", "linear"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, description=(
        "linear warm-up, in epochs (fractions allowed, counted in steps): over its W = warmup_epochs * steps_per_epoch"
        " steps the lr is lr * (step + 1) / W, so it starts at lr / W and reaches lr; then the schedule runs, cosine "
        "measured from the end of the warm-up, step/multistep from epoch 0. Not with onecycle, which warms up itself"))
    warmup_steps: int = Field(0, ge=0, description=(
        "the same linear warm-up counted in optimizer steps (W = warmup_steps), instead of warmup_epochs; 0 = use "
        "warmup_epochs"))
    pct_start: float = Field(0.3, gt=0, lt=1, description="onecycle: share of all steps spent rising to lr")
    div_factor: float = Field(25.0, gt=0, description="onecycle: the lr starts at lr / div_factor")
    final_div_factor: float = Field(1e4, gt=0, description="onecycle: the lr ends at lr / (div_factor * this)")
    step_size: int = Field(30, gt=0, description="epochs between decays (step)")
    milestones: list[int] = Field(default_factory=list, description="epochs of decay (multistep)")
    gamma: float = Field(0.1, gt=0)
    min_lr: float = Field(0.0, ge=0, description="final lr of the cosine schedule")

    @model_validator(mode="after")
    def _onecycle_warms_up_itself(self) -> "ScheduleConfig":
        if self.name == "onecycle" and (self.warmup_epochs > 0 or self.warmup_steps > 0):
            raise ValueError("warmup_epochs and warmup_steps do not combine with onecycle, which has its own warm-up "
                             "(pct_start); set them to 0")
        if self.warmup_epochs > 0 and self.warmup_steps > 0:
            raise ValueError("give the warm-up once: warmup_epochs or warmup_steps, not both")
        return self


class TrainConfig(StrictModel):
    section: ClassVar[str] = "train"
    epochs: int = Field(10, gt=0, le=1_000_000, description="number of epochs (at most a million: larger is a typo)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0, description="max global grad norm; None = off")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description=(
        "fp32 (default); bf16: the forward pass under torch.autocast (CPU and CUDA), weights, gradients and optimizer"
        " in fp32; fp16: autocast with a GradScaler (dynamic loss scaling), CUDA only. The temperature softmaxes of"
        " the KD losses always run in fp32. Evaluation runs in fp32"))
    accumulate: int = Field(1, ge=1, le=4096, description=(
        "gradient accumulation: one optimizer step per N micro-batches of data.batch_size (effective batch N * "
        "batch_size, each micro-batch's loss weighted by its share of the samples); exact against the larger batch "
        "for per-sample losses (ce, kd, ...), not for BatchNorm or per-batch statistics (crd, rkd, sp, ...); "
        "schedules count optimizer steps; refused by methods that own their step (dfa, l2t_dln, prokt)"))
    # Defaults from bench/run_overhead.py (docs/benchmarks.md): of the per-epoch extras only validation costs
    # enough to matter; checkpoints, TensorBoard, JSONL and the progress bar together stay well under 1 % of a run.
    eval_every: int = Field(5, gt=0, description=(
        "evaluate on validation every N epochs; the last epoch always does, so the final metrics do not depend on "
        "it. 5 by default: validation is the one per-epoch extra that costs (a forward pass over the whole val "
        "split, ~0.6 s for 6000 Fashion-MNIST samples with the cnn[8,16] student on one CPU thread, ~8 % of a "
        "full 54000-sample epoch; eval_every 1 made a 5-epoch run 2.6 s slower than eval_every 5); set 1 for per-epoch learning curves"))
    log_every: int = Field(50, gt=0, description="log the running loss every N steps (a JSONL line ~10 µs, a "
                                                 "TensorBoard scalar ~60 µs: negligible)")
    checkpoint_every: int = Field(1, gt=0, description=(
        "write a resumable checkpoint every N epochs (and always after the last); 1 by default: a checkpoint with "
        "its fsyncs measured ~5 ms on local disk, so resuming loses at most one epoch for almost nothing"))
    checkpoint_steps: int | None = Field(None, gt=0, description="also checkpoint every N steps within epochs, so a "
                                         "kill loses at most N steps; None = at epoch ends only")
    eval_test: bool = Field(False, description=(
        "also evaluate the test split at every validation point (every eval_every epochs) and record it in the "
        "epoch record as test_*: test accuracy over training, for analysis (not for choosing anything); off "
        "changes nothing"))
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda[:i]'")
    sync_batchnorm: bool = Field(False, description=(
        "under torchrun, BatchNorm layers in train mode normalise over the global batch (all processes' shards), "
        "so N processes train as one does; off = each process uses its own shard's statistics, as DDP does"))
    progress: bool = Field(True, description="show a rich progress bar (~1 µs a step; while stderr is a "
                                             "terminal its redraw thread takes ~1.5 % of a core)")
    tensorboard: bool = Field(True, description=(
        "mirror logged scalars to TensorBoard (tb/ in the run folder); on by default: importing it costs ~0.1 s "
        "once per process and a writer well under 1 ms, so turning it off saves nothing measurable"))


class RecipeConfig(StrictModel):
    """How to train a model from scratch: optimizer, schedule and loop."""

    section: ClassVar[str] = "recipe"
    seed: int = 0
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()


class TeacherCacheConfig(StrictModel):
    """The teacher-output cache (`teacher.source: cache`): the teacher's outputs recorded once per sample and
    cached epoch, with each sample's augmentation, and replayed (FKD, Shen & Xing, ECCV 2022)."""

    section: ClassVar[str] = "teacher.cache"
    path: str | None = Field(None, description="cache folder; default $KDFORGE_CACHE/teacher_outputs/<key>")
    epochs: int = Field(1, ge=1, le=10_000, description="augmented views recorded per sample (1 without augmentation)")
    after: Literal["cycle", "live"] = Field("cycle", description="past the recorded epochs: replay them again "
                                                                 "(cycle) or run the teacher (live)")
    storage: Literal["full", "topk"] = Field("full", description="all logits, or the k largest and the rest's mass")
    k: int = Field(5, ge=1, description="logits kept per sample with storage: topk")
    rest: Literal["uniform", "drop"] = Field("uniform", description="topk: the missing classes share the rest of the"
                                                                   " mass evenly (uniform) or get none (drop)")
    dtype: Literal["float16", "float32"] = Field("float16", description="storage type of logits and features")
    shard_rows: int = Field(65536, ge=1, description="samples per safetensors shard")
    max_gb: float = Field(8.0, gt=0, description="refuse to build a cache larger than this (features can be huge)")
    on_mismatch: Literal["refuse", "rebuild"] = Field("refuse", description="a cache at `path` built for other data,"
                                                                             " teacher or settings: stop, or rebuild")
    on_missing: Literal["build", "refuse"] = Field("build", description="no cache yet: build it first, or stop")


class TeacherConfig(StrictModel):
    section: ClassVar[str] = "teacher"
    model: ModelConfig
    source: str = Field("live", description="where teacher outputs come from: a registered teacher source ('live': "
                                            "run the model on every batch; 'cache': replay recorded outputs)")
    cache: TeacherCacheConfig = Field(default_factory=TeacherCacheConfig)
    checkpoint: str | None = Field(None, description="saved model folder (kdforge.save_model) to load")
    recipe: RecipeConfig | None = Field(None, description="train the teacher first when no checkpoint is given")
    store_dir: str = Field("runs/teachers", description="where teachers trained from a recipe are kept and reused")

    @model_validator(mode="after")
    def _source(self) -> "TeacherConfig":
        if self.checkpoint is None and self.recipe is None:
            raise ValueError("give teacher.checkpoint (a saved model) or teacher.recipe (how to train one)")
        return self


class MethodConfig(StrictModel):
    section: ClassVar[str] = "method"
    name: str = "ce"
    params: dict[str, Any] = Field(default_factory=dict)


OUTPUT_DIR_FIELDS = ("name", "method", "seed")


class ExperimentConfig(StrictModel):
    name: str = "experiment"
    seed: int = 0
    output_dir: str = Field("runs/{name}/{method}/seed{seed}", description=(
        "run folder; {name}, {method} (method.name) and {seed} are filled in, so two methods on one config do not "
        "share a folder"))
    data: DataConfig
    student: ModelConfig
    teacher: TeacherConfig | None = None
    method: MethodConfig = MethodConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()

    @field_validator("output_dir")
    @classmethod
    def _output_dir_fields(cls, value: str) -> str:
        """Only {name}, {method} and {seed} may be filled in: no other keys, and no attribute or index access."""
        try:
            fields = [f for _, f, _, _ in Formatter().parse(value) if f is not None]
        except ValueError as e:
            raise ValueError(f"not a valid folder template ({e}); use {{name}}, {{method}} and {{seed}}, "
                             "or {{ }} for braces")
        bad = [f for f in fields if f not in OUTPUT_DIR_FIELDS]
        if bad:
            raise ValueError(f"unknown field {{{bad[0]}}}; only {{name}}, {{method}} and {{seed}} are filled in")
        return value

    @property
    def run_dir(self) -> str:
        return self.output_dir.format(name=self.name, method=self.method.name, seed=self.seed)

    @property
    def recipe(self) -> RecipeConfig:
        """The student's training recipe, in the same form as a teacher's."""
        return RecipeConfig(seed=self.seed, optim=self.optim, schedule=self.schedule, train=self.train)
