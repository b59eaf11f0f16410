"""A results plan: the rows of one table (label, config, overrides), the seeds, the reference row of the paired
differences and the metrics shown. One YAML file per table under `results/plans/`; `kdforge reproduce PLAN` runs
it and writes one record per (row, seed) to `results/<key>.jsonl`."""
from __future__ import annotations

import re
from pathlib import Path


from pydantic import BaseModel, ConfigDict, Field, model_validator

from kdforge.options import load_yaml_model
from kdforge.errors import ConfigError


class PlanRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    label: str = Field(min_length=1, description="the row's name in the table (unique in the plan)")
    config: str = Field(description="experiment YAML: relative to configs/, to the working folder or the plan")
    overrides: list[str] = Field(default_factory=list, description="key=value overrides of this row")
    teacher_from: str | None = Field(None, description="distil from this row's teacher (its saved folder) "
                                                       "instead of the teacher this row's own recipe names")


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    key: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="results/<key>.jsonl; the docs marker's name")
    title: str
    about: str = Field("", description="data, models, budget: printed above the table")
    seeds: list[int] = Field(min_length=1)
    reference: str | None = Field(None, description="label of the row paired differences are taken against")
    metrics: list[str] = Field(default_factory=lambda: ["top1"], min_length=1,
                               description="test metrics shown (test.<name> by default; method.<name> for a "
                                           "method's logged statistic, val.<name> for validation)")
    overrides: list[str] = Field(default_factory=list, description="overrides of every row")
    sliver: list[str] = Field(default_factory=list, description="overrides CI adds to run each row once, quickly")
    pairs: list[tuple[str, str]] = Field(default_factory=list, description="further paired comparisons (a, b): "
                                         "a - b on the same seed for every metric, in a table of their own")
    shared_teacher: bool = Field(False, description="every row with the first row's teacher model distils from the "
                                                    "first row's teacher (one teacher for the whole table)")
    rows: list[PlanRow] = Field(min_length=1)

    @model_validator(mode="after")
    def _labels(self) -> "Plan":
        labels = [r.label for r in self.rows]
        dup = next((x for x in labels if labels.count(x) > 1), None)
        if dup is not None:
            raise ValueError(f"row label {dup!r} appears twice; labels must be unique")
        if self.reference is not None and self.reference not in labels:
            raise ValueError(f"reference {self.reference!r} is not a row label; rows: {', '.join(labels)}")
        bad = [r.teacher_from for r in self.rows if r.teacher_from is not None and r.teacher_from not in labels]
        if bad:
            raise ValueError(f"teacher_from {bad[0]!r} is not a row label")
        bad_pair = next((x for pair in self.pairs for x in pair if x not in labels), None)
        if bad_pair is not None:
            raise ValueError(f"pairs: {bad_pair!r} is not a row label")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds repeat a value")
        return self

    def row(self, label: str) -> PlanRow:
        return next(r for r in self.rows if r.label == label)


def load_plan(path: str | Path) -> Plan:
    """The plan in `path`, or one ConfigError line naming the file and the key."""
    return load_yaml_model(path, Plan, "plan file", "plans live in results/plans/<key>.yaml",
                           "key, title, seeds and rows")


def slug(label: str) -> str:
    """A folder name for a row label: lower case, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9_.]+", "-", label.lower()).strip("-") or "row"


def config_path(plan_file: Path, config: str) -> Path:
    """Where a row's config is: as given, under configs/, beside the plan, or in the repository's configs/."""
    given = Path(config)
    candidates = [given, Path("configs") / given, plan_file.parent / given]
    if len(plan_file.resolve().parents) > 2:
        candidates.append(plan_file.resolve().parents[2] / "configs" / given)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise ConfigError(f"plan {plan_file}: config {config!r} was not found under configs/, the working folder or "
                          "beside the plan; give a path that exists")
    return found
