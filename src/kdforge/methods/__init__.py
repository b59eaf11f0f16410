"""Methods: one thin `Method` per file, registered in METHODS; importing this package registers them all."""
from kdforge.methods import at, ce, crd, dkd, fitnet, glnn, graph_pl, kd, nst, pkt, reviewkd, rkd, sp, vid, wsl  # noqa: F401  (registration side effect)
from kdforge.methods.base import Method, MethodParams, Setup
from kdforge.methods.build import build, check_teacher, validate_params
from kdforge.registry import METHODS

__all__ = ["METHODS", "Method", "MethodParams", "Setup", "build", "check_teacher", "validate_params"]
