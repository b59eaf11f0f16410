"""The search's pieces without training: genome <-> program, the evolution sampler (generation 0 random, later
children bred from parents, shrinkage, no duplicates), loss rejection and the search config's errors."""
import math
from pathlib import Path

import pytest
from optuna.trial import TrialState, create_trial

from kdforge.errors import ConfigError
from kdforge.search.evaluate import rejection
from kdforge.search.evolve import EvolutionSampler, distributions, shrunk_values
from kdforge.search.runner import slot_count
from kdforge.search.space import EvolutionConfig, SpaceConfig, genes, load_search_config, program, program_key

SPACE = SpaceConfig(features=[{"student": "features.7", "teacher": "features.7"}], max_transforms=2)


def _genome(**kw):
    g = {"knowledge": "logits", "t0": "softmax:4", "t1": "none", "distance": "kl", "weight": 10.0}
    return {**g, **kw}


def test_genes_expand_arguments_and_program_maps_a_genome():
    g = genes(SPACE)
    assert "softmax:4" in g["t0"] and "softmax" not in g["t0"] and g["t0"][0] == "none"
    assert g["knowledge"] == ["logits", "features:features.7|features.7"]
    p = program(SPACE, _genome(knowledge="features:features.7|features.7", t0="attention", t1="l2norm", distance="l2"))
    assert p == {"ce_weight": 1.0, "branches": [{"knowledge": "features", "student": "features.7",
                                                 "teacher": "features.7", "transforms": ["attention", "l2norm"],
                                                 "distance": "l2", "weight": 10.0}]}
    # an empty slot moved gives the same program, hence the same key
    assert program_key(program(SPACE, _genome(t0="none", t1="softmax:4"))) == program_key(program(SPACE, _genome()))


def _trial(number, genome, value=None, rejected=False):
    state = TrialState.PRUNED if rejected else TrialState.COMPLETE if value is not None else TrialState.RUNNING
    t = create_trial(state=state, value=None if rejected else value, params=genome,
                     distributions=distributions(SPACE),
                     user_attrs={"key": program_key(program(SPACE, genome)), **({"rejected": "x"} if rejected else {})})
    t.number = number
    return t


class _Study:
    def __init__(self, trials):
        self.trials = trials

    def get_trials(self, deepcopy=False, states=None):
        return self.trials


def test_children_after_the_first_generation_come_from_the_parents():
    evo = EvolutionConfig(population=4, tournament=2, crossover=1.0, mutation=0.0)
    parents = [_trial(i, _genome(weight=w, distance=d), value=v)
               for i, (w, d, v) in enumerate([(0.5, "kl", 80), (1.0, "l1", 81), (2.0, "l2", 82), (5.0, "cosine", 83)])]
    sampler = EvolutionSampler(SPACE, evo)
    for n in range(4, 12):
        child = sampler.sample_relative(_Study(parents), _trial(n, _genome()), distributions(SPACE))
        assert child["weight"] in {0.5, 1.0, 2.0, 5.0} and child["distance"] in {"kl", "l1", "l2", "cosine"}
        assert child["t0"] == "softmax:4" and child["knowledge"] == "logits"  # every parent agrees there
        assert program_key(program(SPACE, child)) not in {t.user_attrs["key"] for t in parents}  # never a copy


def test_first_generation_is_random_and_reproducible_per_trial():
    sampler = EvolutionSampler(SPACE, EvolutionConfig(population=4, seed=3))
    a = [sampler.sample_relative(_Study([]), _trial(n, _genome()), distributions(SPACE)) for n in range(4)]
    b = [sampler.sample_relative(_Study([]), _trial(n, _genome()), distributions(SPACE)) for n in range(4)]
    assert a == b and len({program_key(program(SPACE, g)) for g in a}) > 1
    for g in a:
        assert all(g[k] in v for k, v in genes(SPACE).items())


def test_shrinkage_drops_values_whose_first_uses_were_all_rejected():
    trials = [_trial(i, _genome(t0="pool", weight=w), rejected=True) for i, w in enumerate([0.5, 1.0, 2.0])]
    trials.append(_trial(3, _genome(t0="softmax:4", weight=0.5), value=50))
    shrunk = shrunk_values(trials, after=3)
    assert shrunk["t0"] == {"pool"} and "weight" not in shrunk  # weight 0.5 also had a valid use
    sampler = EvolutionSampler(SPACE, EvolutionConfig(population=100, shrink_after=3))
    drawn = {sampler.sample_relative(_Study(trials), _trial(n, _genome()), distributions(SPACE))["t0"]
             for n in range(4, 80)}
    assert "pool" not in drawn and len(drawn) > 5


def test_loss_rejection():
    assert rejection([2.3, 2.1, 1.9], 10) is None
    assert "non-finite" in rejection([2.3, math.nan], 10)
    assert "non-finite" in rejection([2.3, math.inf], 10)
    assert "exploded at warm-up batch 2" in rejection([1.0, 5.0, 11.0], 10)


def test_slot_count_counts_retries_once_and_ignores_over_budget():
    done = create_trial(state=TrialState.COMPLETE, value=1.0)
    failed = create_trial(state=TrialState.FAIL)
    over = create_trial(state=TrialState.FAIL, user_attrs={"over_budget": True})
    waiting = create_trial(state=TrialState.WAITING)
    assert slot_count([done, failed, over, waiting]) == 2


def test_search_config_errors_name_the_key(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("experiment: x.yaml\nspace: {transforms: [softmx]}\n")
    with pytest.raises(ConfigError, match=r"space.transforms: unknown transform 'softmx'"):
        load_search_config(path)
    path.write_text("experiment: x.yaml\nevolution: {populaton: 3}\n")
    with pytest.raises(ConfigError, match="evolution.populaton"):
        load_search_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_search_config(tmp_path / "missing.yaml")
    path.write_text("experiment: x.yaml\n")
    cfg, exp = load_search_config(path, ["evolution.trials=5", "name=abc"])
    assert cfg.evolution.trials == 5 and cfg.storage_url.endswith("runs/search/abc/search.db")
    assert exp == tmp_path / "x.yaml"




def test_cli_input_errors_are_one_line_and_exit_2(tmp_path, capsys):
    from kdforge.cli import main

    assert main(["search", str(tmp_path / "nope.yaml")]) == 2
    assert main(["search", "report"]) == 2
    path = tmp_path / "s.yaml"
    path.write_text("experiment: x.yaml\n")
    assert main(["search", "report", str(path), f"out={tmp_path / 'none'}"]) == 2  # no search has run there
    assert main(["search", str(path), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    assert "no such file" in err[2] and "--workers must be at least 1" in err[3]


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs" / "search").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_search_configs_validate(path):
    from kdforge.api import load_config

    cfg, experiment = load_search_config(path)
    exp = load_config(experiment, cfg.overrides)
    assert exp.teacher is not None and cfg.evolution.trials >= cfg.evolution.population
    for genome in cfg.evolution.seed_programs:  # queued genomes name only genes and values of the space
        assert all(genome[g] in choices for g, choices in genes(cfg.space).items())
