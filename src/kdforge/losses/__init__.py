"""Distillation losses: pure functions of tensors, no state, no modules. Each docstring cites its paper."""
from kdforge.losses.at import at_loss, attention_map
from kdforge.losses.common import (
    hard_cross_entropy,
    kl_div_with_temperature,
    pool_to_common_size,
    soft_cross_entropy,
    soft_targets,
)
from kdforge.losses.crd import crd_nce_loss, crd_scores
from kdforge.losses.dkd import dkd_loss, dkd_terms
from kdforge.losses.fitnet import hint_loss
from kdforge.losses.kd import kd_loss
from kdforge.losses.nst import nst_loss, polynomial_kernel
from kdforge.losses.pkt import cosine_probabilities, pkt_loss
from kdforge.losses.pseudo_label import (
    average_views,
    cautious_pl_loss,
    select_pseudo_labels,
    view_agreement,
    wrong_with_wrong_neighbour,
)
from kdforge.losses.reviewkd import hcl_loss
from kdforge.losses.rkd import (
    angle_potential,
    distance_potential,
    pairwise_distances,
    rkd_angle_loss,
    rkd_distance_loss,
    rkd_loss,
)
from kdforge.losses.sp import similarity_matrix, sp_loss
from kdforge.losses.vid import vid_log_scale_init, vid_nll, vid_variance
from kdforge.losses.wsl import wsl_loss, wsl_weights

__all__ = [
    "average_views",
    "cautious_pl_loss",
    "select_pseudo_labels",
    "view_agreement",
    "wrong_with_wrong_neighbour",
    "angle_potential",
    "at_loss",
    "attention_map",
    "cosine_probabilities",
    "crd_nce_loss",
    "crd_scores",
    "distance_potential",
    "dkd_loss",
    "dkd_terms",
    "hard_cross_entropy",
    "hcl_loss",
    "hint_loss",
    "kd_loss",
    "kl_div_with_temperature",
    "nst_loss",
    "pairwise_distances",
    "pkt_loss",
    "polynomial_kernel",
    "pool_to_common_size",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "rkd_loss",
    "similarity_matrix",
    "soft_cross_entropy",
    "soft_targets",
    "sp_loss",
    "vid_log_scale_init",
    "vid_nll",
    "vid_variance",
    "wsl_loss",
    "wsl_weights",
]
