"""train.eval_test: the test split evaluated at every validation point (a test curve over training) changes no
number of the run, draws no random number, and records test_* metrics exactly where val_* ones are."""
import pytest
import torch

import kdforge.methods as methods
import kdforge.models as models
from kdforge.data import AugmentSettings, Batches
from kdforge.engine import Trainer, seed_everything
from kdforge.engine.settings import LoopSettings, OptimSettings, Recipe
from kdforge.methods import MethodSpec
from kdforge.models import ModelSpec

AUG = AugmentSettings(mixup_alpha=0.4, flip=True)  # the loader draws random numbers every batch, dropout too


@pytest.fixture(scope="module")
def bundle(digits):
    return digits


def _fit(bundle, run_dir, eval_test: bool):
    seed_everything(0)
    student = models.build(ModelSpec(name="mlp", params={"hidden": [32], "dropout": 0.2}), bundle.spec)
    method = methods.build(MethodSpec(name="ce"), student, None, methods.Setup.for_data(bundle.spec, bundle.train))
    recipe = Recipe(seed=0, optim=OptimSettings(lr=0.01),
                    train=LoopSettings(epochs=5, eval_every=2, progress=False, eval_test=eval_test))
    trainer = Trainer(method, Batches(bundle, 64, AUG), recipe, run_dir)
    result = trainer.fit()
    return trainer, result, torch.get_rng_state()


def test_eval_test_changes_no_number_and_records_test_where_val_is(bundle, tmp_path):
    off, off_result, off_rng = _fit(bundle, tmp_path / "off", eval_test=False)
    on, on_result, on_rng = _fit(bundle, tmp_path / "on", eval_test=True)
    # Same weights, RNG stream, final metrics and every value of the history that both have.
    for (k, a), b in zip(off.method.trainable().state_dict().items(), on.method.trainable().state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(off_rng, on_rng)
    assert off_result.val == on_result.val and off_result.test == on_result.test
    for before, after in zip(off_result.history, on_result.history, strict=True):
        assert {k: v for k, v in after.items() if not k.startswith("test_")} == before
        assert not any(k.startswith("test_") for k in before)
    # test_* exactly at the validation points: epochs 2 and 4 (eval_every) and the last one, 5.
    validated = [r["epoch"] + 1 for r in on_result.history if "val_top1" in r]
    tested = [r["epoch"] + 1 for r in on_result.history if "test_top1" in r]
    assert validated == tested == [2, 4, 5]
    last = on_result.history[-1]
    assert {k[len("test_"):]: v for k, v in last.items() if k.startswith("test_")} == on_result.test


def test_eval_test_is_not_part_of_a_teachers_identity():
    from kdforge.api import teacher_dir
    from kdforge.api import parse_config
    from kdforge.demo import preset

    on = parse_config(preset(), ["teacher.recipe.train.eval_test=true"])
    assert teacher_dir(parse_config(preset())) == teacher_dir(on)
