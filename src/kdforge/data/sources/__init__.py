"""Data set sources, one module each; importing this package registers them all in DATASETS."""
from kdforge.data.sources import cifar10, digits, gaussian, idx, mnist1d, planetoid, text
from kdforge.data.sources.base import Source, SourceParams

__all__ = ["Source", "SourceParams", "cifar10", "digits", "gaussian", "idx", "mnist1d", "planetoid", "text"]
