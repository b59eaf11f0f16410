"""The Python API; the CLI and the applications call nothing below it. Run a config, or distill your own modules on
your own tensors. The YAML schema (`kdforge.config`) is read here and in the applications only."""
from kdforge.api.distill import as_split, distill
from kdforge.api.names import check_names, load_config, parse_config
from kdforge.api.runs import build_teacher_cache, cache_request, count_params, run
from kdforge.api.teachers import (
    NO_EFFECT_ON_WEIGHTS, prepare_teacher, teacher_agreement, teacher_dir, teacher_logits_dir, train_teacher,
)
from kdforge.teachers.logits import TeacherLogits

__all__ = ["NO_EFFECT_ON_WEIGHTS", "TeacherLogits", "as_split", "build_teacher_cache", "cache_request", "check_names",
           "count_params", "distill", "load_config", "parse_config", "prepare_teacher", "run", "teacher_agreement",
           "teacher_dir", "teacher_logits_dir", "train_teacher"]
