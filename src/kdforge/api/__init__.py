"""The Python API; the CLI and the applications call nothing below it. Run a config, or distill your own modules on
your own tensors. The YAML schema (`kdforge.config`) is read here and in the applications only."""
from kdforge.api.assembly import (
    Assembly, assemble, assemble_distill, assemble_teacher, build_data, build_model, cache_request, check_method,
    prepare_teacher, run_lock, train_teacher,
)
from kdforge.api.catalog import Param, method_catalog, method_params, model_catalog
from kdforge.api.distill import as_split, distill
from kdforge.api.names import check_names, load_config, parse_config
from kdforge.api.runs import build_teacher_cache, cache_info, count_params, ensure_teacher, run
from kdforge.api.teachers import (
    NO_EFFECT_ON_WEIGHTS, teacher_agreement, teacher_dir, teacher_logits_dir, without_later_defaults,
)
from kdforge.teachers.logits import TeacherLogits

__all__ = ["NO_EFFECT_ON_WEIGHTS", "Assembly", "Param", "TeacherLogits", "method_catalog", "method_params", "model_catalog", "as_split", "assemble", "assemble_distill",
           "assemble_teacher", "build_data", "build_model", "build_teacher_cache", "cache_info", "cache_request", "check_method", "check_names", "count_params",
           "distill", "ensure_teacher", "load_config", "parse_config", "prepare_teacher", "run", "run_lock", "teacher_agreement",
           "teacher_dir", "teacher_logits_dir", "train_teacher", "without_later_defaults"]
