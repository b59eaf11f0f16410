"""The model zoo: every builder registered in `MODELS`, `build` from a config, `save_model` / `load_model`."""
from kdforge.models import (  # noqa: F401  (registers the builders)
    cnn,
    cnn1d,
    gnn,
    hf,
    mlp,
    mobilenetv2,
    resnet_cifar,
    shufflenet,
    text,
    vgg,
    wrn,
)
from kdforge.models.build import ModelSpec, build, built_from, check
from kdforge.models.infodrop import InfoDropLayer, InfoDropSettings
from kdforge.models.io import load_model, load_model_with_info, save_model
from kdforge.registry import MODELS

__all__ = ["MODELS", "InfoDropLayer", "InfoDropSettings", "ModelSpec", "build", "built_from", "check", "load_model",
           "load_model_with_info", "save_model"]
