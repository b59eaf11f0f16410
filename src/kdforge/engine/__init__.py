"""Training loop, checkpoints, metrics, logging."""
from kdforge.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from kdforge.engine.metrics import evaluate, predict
from kdforge.engine.seeding import seed_everything
from kdforge.engine.trainer import FitResult, Trainer, resolve_device

__all__ = ["FitResult", "Trainer", "evaluate", "latest_checkpoint", "load_checkpoint", "predict",
           "resolve_device", "save_checkpoint", "seed_everything"]
