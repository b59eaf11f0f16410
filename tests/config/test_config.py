import pytest
import yaml

from kdforge.api import load_config, parse_config
from kdforge.config import apply_overrides
from kdforge.demo import preset
from kdforge.errors import ConfigError


def test_preset_is_valid_and_frozen():
    cfg = parse_config(preset())
    assert cfg.method.name == "kd" and cfg.student.name == "mlp"
    with pytest.raises(Exception):
        cfg.seed = 3  # type: ignore[misc]


def test_overrides_parse_yaml_values_and_nest():
    data = apply_overrides({"train": {"epochs": 3}}, ["train.epochs=5", "train.grad_clip=1.5",
                                                       "student.params.hidden=[8, 4]", "data.root=null"])
    assert data == {"train": {"epochs": 5, "grad_clip": 1.5}, "student": {"params": {"hidden": [8, 4]}},
                    "data": {"root": None}}
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="train.epochs is not a section"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])


def test_unknown_key_names_path_and_allowed_keys():
    with pytest.raises(ConfigError) as err:
        parse_config(preset(), ["train.epohcs=3"])
    msg = str(err.value)
    assert "train.epohcs: unknown key" in msg and "epochs" in msg and "grad_clip" in msg


def test_unknown_nested_key_in_optional_section():
    with pytest.raises(ConfigError, match=r"teacher\.recipe\.optim\.lrr: unknown key; allowed: betas, lr"):
        parse_config(preset(), ["teacher.recipe.optim.lrr=0.1"])


def test_wrong_type_and_bound():
    with pytest.raises(ConfigError, match=r"train\.epochs: .*integer.*'many'"):
        parse_config(preset(), ["train.epochs=many"])
    with pytest.raises(ConfigError, match=r"data\.batch_size: .*greater than 0"):
        parse_config(preset(), ["data.batch_size=0"])
    with pytest.raises(ConfigError, match=r"optim\.name: .*'sgd', 'adam' or 'adamw'"):
        parse_config(preset(), ["optim.name=adm"])


@pytest.mark.parametrize("override,pattern", [
    ("method.name=kdd", r"method\.name: unknown method 'kdd' \(did you mean 'kd'\?\); allowed: .*wsl"),
    ("student.name=resnet9", r"student\.name: unknown model 'resnet9'.*allowed: .*resnet8"),
    ("data.name=imagenet", r"data\.name: unknown dataset 'imagenet'.*allowed: .*cifar10"),
    ("method.params.temprature=3", r"method\.params\.temprature"),
    ("student.params.widht=3", r"student\.params\.widht"),
])
def test_unregistered_names_and_params(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_config(preset(), [override])


def test_method_that_needs_a_teacher():
    raw = preset()
    del raw["teacher"]
    with pytest.raises(ConfigError, match="method 'kd' needs a teacher"):
        parse_config(raw)
    assert parse_config(raw, ["method.name=ce", "method.params={}"]).teacher is None


def test_teacher_needs_checkpoint_or_recipe():
    with pytest.raises(ConfigError, match="teacher.checkpoint .* or teacher.recipe"):
        parse_config(preset(), ["teacher.recipe=null"])


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(unsafe)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(preset()))
    assert load_config(good, ["seed=4"]).seed == 4
