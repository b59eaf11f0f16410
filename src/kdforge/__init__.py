"""kdforge: knowledge distillation, every method really implemented."""
__version__ = "0.1.0"

from kdforge.api import distill, run  # noqa: E402
from kdforge.config import load_config  # noqa: E402
from kdforge.models import load_model, save_model  # noqa: E402

__all__ = ["__version__", "distill", "load_config", "load_model", "run", "save_model"]
