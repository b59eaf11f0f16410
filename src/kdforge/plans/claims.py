"""The claims ledger: for each seed paper, its headline claims, what the committed records say of each, and the
command that regenerates the evidence. `results/claims.yaml` lists the claims and their evidence (paired
comparisons in plans); `kdforge results docs` writes the ledger into the `<!-- ledger:claims -->` section.

A claim's status follows from its evidence when it names any: every comparison in the expected direction with
its 95 % interval excluding zero -> "confirmed at this scale"; every one the other way -> "contradicted at this
scale"; both kinds -> "mixed"; otherwise "inconclusive at this scale"; no records yet -> "untested". A claim with
no comparison to compute (a curve shape, a correlation) carries its status and evidence text by hand.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kdforge.options import describe_errors
from kdforge.errors import ConfigError
from kdforge.plans.plan import load_plan
from kdforge.plans.records import read_records
from kdforge.plans.stats import Paired, paired
from kdforge.plans.tables import by_row, is_percent

Status = Literal["confirmed at this scale", "contradicted at this scale", "mixed", "inconclusive at this scale",
                 "untested", "not testable here"]


class Evidence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    plan: str = Field(description="plan key (results/plans/<key>.yaml)")
    a: str = Field(description="row whose value the claim says is higher (expect: above) or lower (below)")
    b: str = Field(description="the row it is compared with, on the same seeds")
    metric: str = "top1"
    metric_b: str | None = Field(None, description="b's metric when it differs from a's (e.g. the same row's "
                                                   "round-0 accuracy against its final one)")
    expect: Literal["above", "below"] = "above"


class Claim(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    paper: str
    claim: str = Field(description="the paper's headline claim, in one line")
    evidence: list[Evidence] = Field(default_factory=list)
    status: Status | None = Field(None, description="set by hand only when no evidence comparison can decide it")
    note: str = ""


def load_claims(path: Path) -> list[Claim]:
    if not path.exists():
        return []
    try:
        return [Claim.model_validate(c) for c in yaml.safe_load(path.read_text()) or []]
    except (ValidationError, TypeError) as e:
        detail = describe_errors(e, "") if isinstance(e, ValidationError) else str(e)
        raise ConfigError(f"{path}: {detail}") from None


def _compare(ev: Evidence, results: Path) -> tuple[Paired | None, str]:
    plan = load_plan(results / "plans" / f"{ev.plan}.yaml")
    records = read_records(results / f"{ev.plan}.jsonl")
    a_rows, b_rows = by_row(plan, records, ev.metric), by_row(plan, records, ev.metric_b or ev.metric)
    p = paired(b_rows.get(ev.b, {}), a_rows.get(ev.a, {}))
    if p is None:
        return None, f"`{ev.plan}`: {ev.a} vs {ev.b}: no records yet"
    what = ev.metric if ev.metric_b is None else f"{ev.metric} − {ev.metric_b}"
    mean, interval = p.shown(100 if is_percent(ev.metric) else 1)
    text = (f"`{ev.plan}`: {ev.a} − {ev.b}, {what}: {mean} "
            f"{interval or '(one seed: no interval)'}, {p.wins}/{p.losses} of {p.n} seeds")
    return p, text


def status_of(claim: Claim, results: Path) -> tuple[str, list[str]]:
    if not claim.evidence:
        return claim.status or "untested", []
    verdicts, lines = [], []
    for ev in claim.evidence:
        p, text = _compare(ev, results)
        lines.append(text)
        if p is not None:
            verdicts.append("agree" if p.verdict == ev.expect else "tie" if p.verdict == "tie" else "oppose")
    if not verdicts:
        return "untested", lines
    if claim.status is not None:
        return claim.status, lines
    if all(v == "agree" for v in verdicts):
        return "confirmed at this scale", lines
    if all(v == "oppose" for v in verdicts):
        return "contradicted at this scale", lines
    if "agree" in verdicts and "oppose" in verdicts:
        return "mixed", lines
    return "inconclusive at this scale", lines


def ledger(results: Path) -> str:
    """The ledger as Markdown, one section per paper in the order of claims.yaml."""
    claims = load_claims(results / "claims.yaml")
    out: list[str] = []
    paper = None
    for c in claims:
        if c.paper != paper:
            paper = c.paper
            out.append(f"\n### {paper}\n")
        status, lines = status_of(c, results)
        out.append(f"- **{c.claim}** — *{status}*.")
        out += [f"  - {line}" for line in lines]
        plans = sorted({ev.plan for ev in c.evidence})
        if plans:
            out.append("  - regenerate: " + "; ".join(f"`kdforge reproduce results/plans/{k}.yaml`" for k in plans))
        if c.note:
            out.append(f"  - {c.note.strip()}")
    return "\n".join(out).lstrip("\n") + "\n"
