"""Analysis tools: data statistics, the second-order (Section 5) analysis, graying, OOD metrics.

All functions are pure: they take arrays and callables, never the model code.
"""

from glow_ood.analysis.graying import blend_toward_grey, default_grey, graying_curve
from glow_ood.analysis.ood_metrics import (
    auroc,
    average_precision,
    fpr_at_tpr,
    summarize_ood_metrics,
    typicality_bootstrap_threshold,
    typicality_scores,
)
from glow_ood.analysis.second_order import (
    cv_glow_closed_form,
    hessian_matrix,
    hessian_vector_product,
    linear_flow_matrix,
    squeeze_variances,
    trace_term_diagonal,
    trace_term_diagonal_exact,
    trace_term_from_samples,
)
from glow_ood.analysis.statistics import (
    channel_sums,
    channel_variance_sum_difference,
    dataset_pixel_stats,
    per_image_channel_stats,
    to_model_scale,
)
