"""Data set sources, one module each; importing this package registers them all in DATASETS."""
from kdforge.data.sources import cifar10, cifar_python, digits, gaussian, idx, imagefolder, mnist1d, planetoid, text
from kdforge.data.sources.base import Source, SourceParams

__all__ = ["Source", "SourceParams", "cifar10", "cifar_python", "digits", "gaussian", "idx", "imagefolder", "mnist1d",
           "planetoid", "text"]
