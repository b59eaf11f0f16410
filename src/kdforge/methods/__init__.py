"""Methods: one thin `Method` per file, registered in METHODS; importing this package registers them all."""
from kdforge.methods import (  # noqa: F401  (registration side effect)
    at, ce, crd, dfa, dkd, fitnet, glnn, graph_pl, kd, kdzero, l2t_dln, nst, pkt, prokt, reviewkd, rkd, slam, sp,
    unlabeled, vid, wsl,
)
from kdforge.methods.base import Method, MethodParams, Setup
from kdforge.methods.build import MethodSpec, build, check_data, check_teacher, validate_params
from kdforge.registry import METHODS

__all__ = ["METHODS", "Method", "MethodParams", "MethodSpec", "Setup", "build", "check_data", "check_teacher",
           "validate_params"]
