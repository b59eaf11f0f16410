"""Training loop, checkpoints, metrics, logging, runtime. Knows methods only through `TrainMethod`."""
from kdforge.engine.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from kdforge.engine.contract import Optimization, Plan, StepContext, StepOutput, TrainMethod
from kdforge.engine.metrics import agreement_metrics, evaluate, predict
from kdforge.engine.runtime import Runtime, resolve_device
from kdforge.engine.seeding import seed_everything
from kdforge.engine.result import FitResult, Metrics
from kdforge.engine.trainer import Trainer

__all__ = ["FitResult", "Metrics", "Optimization", "Plan", "Runtime", "StepContext", "StepOutput", "TrainMethod",
           "Trainer", "agreement_metrics", "evaluate", "latest_checkpoint", "load_checkpoint", "predict",
           "resolve_device", "save_checkpoint", "seed_everything"]
