"""Evolution (KD-Zero Sec. 3.2) as an Optuna sampler, so that any number of workers sharing one storage take part
in one search: each `study.ask()` breeds one child from the trials the storage holds.

- Generation g of trial n is n // population. Generation 0 is drawn at random (after any seed programs).
- Later children: two tournaments over the `population` most recent valid trials (the fittest of `tournament`
  drawn), uniform crossover with probability `crossover` (else a copy of the first parent), then each gene redrawn
  with probability `mutation`. A child whose program was already evaluated or is being evaluated is bred again
  (up to 20 times), so a search spends its budget on new programs.
- Search-space shrinkage: a gene value whose first `shrink_after` uses were all rejected is not drawn again.

Deviation: the paper's fitness combines proxy accuracy with "sharpness and represent gap" and its exact
population and generation counts are not public; here fitness is the proxy's validation top-1 and the schedule
is steady-state (parents from the most recent valid trials), which suits asynchronous workers.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from kdforge.errors import require_extra

require_extra("optuna", "search", "the distiller search")  # one line naming the extra, before the imports below

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from kdforge.search.space import EvolutionConfig, SpaceConfig, genes, program, program_key

REBREED = 20  # attempts at a child that is not a duplicate


def distributions(space: SpaceConfig) -> dict[str, BaseDistribution]:
    return {name: CategoricalDistribution(choices) for name, choices in genes(space).items()}


def generation(trial_number: int, population: int) -> int:
    return trial_number // population


def is_rejected(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.PRUNED and "rejected" in trial.user_attrs


def shrunk_values(trials: Sequence[FrozenTrial], after: int) -> dict[str, set[Any]]:
    """{gene: values no longer drawn}: those whose first `after` finished uses were all rejected."""
    uses: dict[tuple[str, Any], list[bool]] = defaultdict(list)
    for t in sorted(trials, key=lambda t: t.number):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            for gene, value in t.params.items():
                uses[(gene, value)].append(is_rejected(t))
    out: dict[str, set[Any]] = defaultdict(set)
    for (gene, value), rejected in uses.items():
        if len(rejected) >= after and all(rejected[:after]):
            out[gene].add(value)
    return out


class EvolutionSampler(optuna.samplers.BaseSampler):
    def __init__(self, space: SpaceConfig, evo: EvolutionConfig) -> None:
        self.space, self.evo = space, evo
        self.dists = distributions(space)
        self._random = optuna.samplers.RandomSampler(seed=evo.seed)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self.dists)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        rng = np.random.default_rng([self.evo.seed, trial.number])  # reproducible per trial, whichever worker
        trials = study.get_trials(deepcopy=False)
        taken = {t.user_attrs.get("key") for t in trials if t.number != trial.number} - {None}
        shrunk = shrunk_values(trials, self.evo.shrink_after)
        parents = self._parent_pool(trials)
        child: dict[str, Any] = {}
        for _ in range(REBREED):
            if generation(trial.number, self.evo.population) == 0 or len(parents) < 2:
                child = {g: self._draw(rng, g, shrunk) for g in self.dists}
            else:
                child = self._breed(rng, parents, shrunk)
            if program_key(program(self.space, child)) not in taken:
                break
        return child

    def _parent_pool(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        valid = [t for t in trials if t.state == TrialState.COMPLETE and set(t.params) == set(self.dists)]
        return sorted(valid, key=lambda t: t.number)[-self.evo.population:]

    def _draw(self, rng: np.random.Generator, gene: str, shrunk: dict[str, set[Any]]) -> Any:
        choices = list(self.dists[gene].choices)  # type: ignore[attr-defined]
        allowed = [c for c in choices if c not in shrunk.get(gene, ())] or choices
        return allowed[rng.integers(len(allowed))]

    def _tournament(self, rng: np.random.Generator, pool: list[FrozenTrial]) -> FrozenTrial:
        drawn = rng.choice(len(pool), size=min(self.evo.tournament, len(pool)), replace=False)
        return max((pool[i] for i in drawn), key=lambda t: t.value)  # type: ignore[arg-type,return-value]

    def _breed(self, rng: np.random.Generator, pool: list[FrozenTrial], shrunk: dict[str, set[Any]]) -> dict[str, Any]:
        a, b = self._tournament(rng, pool), self._tournament(rng, pool)
        cross = rng.random() < self.evo.crossover
        child = {g: (b if cross and rng.random() < 0.5 else a).params[g] for g in self.dists}
        for g in self.dists:
            if rng.random() < self.evo.mutation:
                child[g] = self._draw(rng, g, shrunk)
        return child
