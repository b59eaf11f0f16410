"""Distillation losses: pure functions of tensors, no state, no modules. Each docstring cites its paper.

Logit-level losses follow one layout rule (losses.common): classes on the last dim ([B, C], token logits [B, L, V])
unless `dim=`, the mean over all positions, `mask=` and `reduction=`. Feature and relational losses are not
positional (they say so).
"""
from kdforge.losses.at import at_loss, attention_map
from kdforge.losses.common import (
    Positions,
    Reduction,
    class_dim,
    hard_cross_entropy,
    kl_div_with_temperature,
    pool_to_common_size,
    soft_cross_entropy,
    soft_targets,
)
from kdforge.losses.crd import crd_nce_loss, crd_scores
from kdforge.losses.dfa import aggregate_features
from kdforge.losses.dkd import dkd_loss, dkd_terms
from kdforge.losses.fitnet import hint_loss
from kdforge.losses.kd import kd_loss
from kdforge.losses.l2t_dln import dln_loss, loss_network, one_vs_one_pairs, preprocess_gradients
from kdforge.losses.nst import nst_loss, polynomial_kernel
from kdforge.losses.prokt import mirror_descent_target, prokt_teacher_loss
from kdforge.losses.pkt import cosine_probabilities, pkt_loss
from kdforge.losses.pseudo import (
    confidence_mask,
    forward_corrected_loss,
    hard_pseudo_label_loss,
    thresholded_pseudo_label_loss,
    transition_matrix,
)
from kdforge.losses.pseudo_label import (
    average_views,
    cautious_pl_loss,
    cpl_view_inputs,
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
from kdforge.losses.slam import (
    ALPHA_SUMS,
    SlamTarget,
    alpha_summary,
    alpha_sums,
    calibrate_slam,
    choose_k,
    fit_isotonic,
    indifference_alpha,
    isotonic_predict,
    resolve_alpha_floor,
    slam_loss,
    slam_mix,
    slam_target,
    teacher_confidence,
    top_k_accuracy_curve,
    top_k_mask,
)
from kdforge.losses.sp import similarity_matrix, sp_loss
from kdforge.losses.token_kd import forward_kl_loss, generalized_jsd_loss, reverse_kl_loss
from kdforge.losses.vid import vid_log_scale_init, vid_nll, vid_variance
from kdforge.losses.wsl import gradient_dominance_samples, regularization_samples, wsl_loss, wsl_weights

__all__ = [
    "Positions",
    "Reduction",
    "class_dim",
    "forward_kl_loss",
    "generalized_jsd_loss",
    "gradient_dominance_samples",
    "reverse_kl_loss",
    "average_views",
    "cautious_pl_loss",
    "cpl_view_inputs",
    "select_pseudo_labels",
    "view_agreement",
    "wrong_with_wrong_neighbour",
    "aggregate_features",
    "angle_potential",
    "at_loss",
    "attention_map",
    "ALPHA_SUMS",
    "SlamTarget",
    "alpha_summary",
    "alpha_sums",
    "calibrate_slam",
    "choose_k",
    "confidence_mask",
    "cosine_probabilities",
    "crd_nce_loss",
    "crd_scores",
    "distance_potential",
    "dkd_loss",
    "dkd_terms",
    "dln_loss",
    "fit_isotonic",
    "forward_corrected_loss",
    "hard_cross_entropy",
    "hard_pseudo_label_loss",
    "hcl_loss",
    "hint_loss",
    "indifference_alpha",
    "isotonic_predict",
    "kd_loss",
    "kl_div_with_temperature",
    "loss_network",
    "mirror_descent_target",
    "nst_loss",
    "one_vs_one_pairs",
    "pairwise_distances",
    "pkt_loss",
    "polynomial_kernel",
    "regularization_samples",
    "pool_to_common_size",
    "preprocess_gradients",
    "prokt_teacher_loss",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "rkd_loss",
    "similarity_matrix",
    "resolve_alpha_floor",
    "slam_loss",
    "slam_mix",
    "slam_target",
    "soft_cross_entropy",
    "soft_targets",
    "sp_loss",
    "teacher_confidence",
    "thresholded_pseudo_label_loss",
    "top_k_accuracy_curve",
    "top_k_mask",
    "transition_matrix",
    "vid_log_scale_init",
    "vid_nll",
    "vid_variance",
    "wsl_loss",
    "wsl_weights",
]
