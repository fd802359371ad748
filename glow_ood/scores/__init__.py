"""OOD scores built on a trained likelihood model, beyond log p(x) itself.

    scores = default_scores(latent_dims, num_dims)
    fitted = fit_scores(scores, train_stats)          # in-distribution training images only
    values = compute_scores(scores, fitted, stats)    # {name: [N]}, higher = more OOD
"""

from glow_ood.scores.density import (Gaussian, ProductKDE, fit_gaussian, fit_product_kde,
                                     fit_standardizer)
from glow_ood.scores.mutation import mutate_pixels
from glow_ood.scores.registry import (COMPRESSOR_NAMES, Score, applicable, compute_scores,
                                      default_scores, dose_features, fit_scores, overflowed)
