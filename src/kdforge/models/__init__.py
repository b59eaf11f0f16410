"""The model zoo: every builder registered in `MODELS`, `build` from a config, `save_model` / `load_model`."""
from kdforge.models import cnn, cnn1d, gnn, mlp, resnet_cifar, text, vgg, wrn  # noqa: F401  (registers the builders)
from kdforge.models.build import build, check
from kdforge.models.io import load_model, load_model_with_info, save_model
from kdforge.registry import MODELS

__all__ = ["MODELS", "build", "check", "load_model", "load_model_with_info", "save_model"]
