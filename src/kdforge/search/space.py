"""The search config (a YAML file, validated like an experiment config) and the genome <-> program mapping.

A candidate is a fixed-length genome of categorical genes, which is what Optuna stores as a trial's params:
`knowledge`, `t0` .. `t{max_transforms-1}` (a transform or "none"), `distance`, `weight`. `SearchSpace.program`
turns a genome into the `kdzero` method's params (one branch, plus the CE term).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field, ValidationInfo, field_validator, model_validator

from kdforge.config.load import apply_overrides
from kdforge.config.schema import StrictModel
from kdforge.errors import ConfigError

NONE = "none"  # the empty transform slot


class FeaturePair(StrictModel):
    section: ClassVar[str] = "search.space.features"
    student: str = Field(description="module path of the student's feature map")
    teacher: str = Field(description="module path of the teacher's feature map")

    @property
    def name(self) -> str:
        return f"features:{self.student}|{self.teacher}"


class SpaceConfig(StrictModel):
    """What the search may combine. Transforms with an argument are expanded to one choice per argument value."""

    section: ClassVar[str] = "space"
    logits: bool = Field(True, description="the logits are a knowledge choice")
    features: list[FeaturePair] = Field(default_factory=list, description="feature-map pairs that are choices")
    transforms: list[str] = Field(default_factory=lambda: [
        "softmax", "sigmoid", "l2norm", "batchnorm", "samplenorm", "mask_target", "attention", "gram",
        "batch_relation", "channel_relation", "pool"], description="registered transform names")
    distances: list[str] = Field(default_factory=lambda: ["kl", "l1", "l2", "smooth_l1", "cosine", "pearson"])
    weights: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0])
    max_transforms: int = Field(3, ge=1, le=6)
    ce_weight: float = Field(1.0, ge=0, description="weight of the hard-label CE every candidate keeps")

    @field_validator("transforms", "distances")
    @classmethod
    def _registered(cls, value: list[str], info: ValidationInfo) -> list[str]:
        from kdforge.methods.kdzero_ops import DISTANCES, TRANSFORMS
        registry = TRANSFORMS if info.field_name == "transforms" else DISTANCES
        for name in value:
            registry.lookup(name, f"space.{info.field_name}")
        return value

    @model_validator(mode="after")
    def _some_knowledge(self) -> "SpaceConfig":
        if not self.logits and not self.features:
            raise ValueError("no knowledge to search: set logits: true or list feature pairs")
        if not self.distances or not self.weights:
            raise ValueError("distances and weights must each list at least one choice")
        return self


class EvolutionConfig(StrictModel):
    """Evolution as in KD-Zero Sec. 3.2: a population, tournament selection, crossover and mutation."""

    section: ClassVar[str] = "evolution"
    trials: int = Field(48, ge=1, description="candidates evaluated in all (over every worker and restart)")
    population: int = Field(8, ge=2, description="size of a generation; the first is drawn at random")
    tournament: int = Field(3, ge=2, description="candidates drawn per tournament; the fittest is a parent")
    crossover: float = Field(0.5, ge=0, le=1, description="probability a child mixes two parents gene by gene")
    mutation: float = Field(0.25, ge=0, le=1, description="probability each gene is redrawn")
    shrink_after: int = Field(3, ge=1, description="search-space shrinkage: a gene value all of whose first N "
                                                    "uses were rejected is no longer drawn")
    seed: int = 0
    seed_programs: list[dict[str, Any]] = Field(default_factory=list, description="genomes evaluated first "
                                                "(e.g. Hinton KD), as {gene: value}")


class ProxyConfig(StrictModel):
    """The cheap fitness: loss rejection on a few warm-up batches, then short training on a subset."""

    section: ClassVar[str] = "proxy"
    train_subset: int = Field(4000, ge=1, description="training samples of the proxy")
    val_subset: int = Field(2000, ge=1, description="validation samples the fitness is measured on")
    epochs: int = Field(2, ge=1)
    warmup_batches: int = Field(5, ge=1, description="loss rejection: batches trained before the proxy")
    explode_factor: float = Field(10.0, gt=1, description="loss rejection: reject when a warm-up loss exceeds the "
                                                          "first by this factor")


class SearchConfig(StrictModel):
    section: ClassVar[str] = ""
    name: str = Field("kdzero", description="Optuna study name")
    experiment: str = Field(description="experiment YAML (data, teacher, student, recipe), relative to this file")
    overrides: list[str] = Field(default_factory=list, description="key=value overrides of the experiment")
    out: str = Field("runs/search/{name}", description="search folder (trial runs, report); {name} filled in")
    storage: str | None = Field(None, description="Optuna storage URL; default sqlite:///<out>/search.db")
    heartbeat_s: int = Field(10, ge=1, description="a running trial records a heartbeat this often")
    grace_s: int = Field(30, ge=2, description="a trial without heartbeat this long is failed and retried")
    space: SpaceConfig = SpaceConfig()
    evolution: EvolutionConfig = EvolutionConfig()
    proxy: ProxyConfig = ProxyConfig()

    @property
    def out_dir(self) -> Path:
        return Path(self.out.format(name=self.name))

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.out_dir / 'search.db'}"


def load_search_config(path: str | Path, overrides: list[str] = ()) -> tuple[SearchConfig, Path]:
    """The search config and the path of its experiment; `overrides` apply to the search config's own keys
    (evolution.trials=10) as `key=value` with YAML values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: search config not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a search config is a mapping of keys (experiment, space, evolution, proxy)")
    apply_overrides(raw, overrides)
    cfg = SearchConfig(**raw)
    return cfg, (path.parent / cfg.experiment)


# ---- genome <-> program --------------------------------------------------------------------------------------
def genes(space: SpaceConfig) -> dict[str, list[Any]]:
    """Each gene's choices, in a fixed order."""
    from kdforge.methods.kdzero_ops import TRANSFORMS

    knowledge = (["logits"] if space.logits else []) + [f.name for f in space.features]
    transforms = [NONE]
    for name in space.transforms:
        choices = TRANSFORMS[name].arg_choices
        transforms += [f"{name}:{a:g}" for a in choices] if choices else [name]
    out: dict[str, list[Any]] = {"knowledge": knowledge}
    out.update({f"t{i}": transforms for i in range(space.max_transforms)})
    out["distance"] = list(space.distances)
    out["weight"] = list(space.weights)
    return out


def program(space: SpaceConfig, genome: dict[str, Any]) -> dict[str, Any]:
    """The `kdzero` method params of a genome: {ce_weight, branches: [one branch]}."""
    branch: dict[str, Any] = {"knowledge": "logits"}
    if genome["knowledge"] != "logits":
        pair = next(f for f in space.features if f.name == genome["knowledge"])
        branch = {"knowledge": "features", "student": pair.student, "teacher": pair.teacher}
    branch["transforms"] = [genome[f"t{i}"] for i in range(space.max_transforms) if genome[f"t{i}"] != NONE]
    branch["distance"] = genome["distance"]
    branch["weight"] = float(genome["weight"])
    return {"ce_weight": space.ce_weight, "branches": [branch]}


def program_key(params: dict[str, Any]) -> str:
    """A short hash of a program: two genomes that give the same program (empty slots moved) share it."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
