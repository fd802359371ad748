"""Average bits/dim of Glow reported by the paper (Nalisnick et al., ICLR 2019).

Test and OOD values as quoted by Havtorn et al. (2021, Table 1); the FashionMNIST
train value is recalled from the paper's Figure 1 and unconfirmed. Other pairs
are shown in the paper only as histograms, so they have no numbers here.
"""

# in-distribution data set -> {set label: bits/dim}; labels 'train', 'test' or the OOD name.
GLOW_BITS_PER_DIM = {
    'fashion_mnist': {'train': 2.902, 'test': 2.958, 'mnist': 1.833},
    'cifar10': {'train': 3.386, 'test': 3.464, 'svhn_cropped': 2.389},
}
UNCONFIRMED = {('fashion_mnist', 'train')}

# AUROC of log p(x) as an OOD score reported by later work (GUIDE, section 6), for context.
LOG_PX_AUROC_REPORTED = {
    ('fashion_mnist', 'mnist'): '0.1-0.2 (Bergamin et al. 2022)',
    ('cifar10', 'svhn_cropped'): '0.06 (Bergamin et al. 2022)',
}


def glow_value(in_name: str, label: str) -> str:
  """The paper's number formatted for a table cell ('—' where it reports none)."""
  value = GLOW_BITS_PER_DIM.get(in_name, {}).get(label)
  if value is None:
    return '—'
  return f'{value:.3f}' + (' (recalled)' if (in_name, label) in UNCONFIRMED else '')

# AUROC of each OOD score reported by later work (GUIDE, section 6), OOD positive; keys are
# score names of glow_ood.scores (a prefix matches every compressor of input complexity).
SCORE_AUROC_REPORTED = {
    ('fashion_mnist', 'mnist'): {
        'log p(x)': '0.1-0.2 (Glow; Bergamin et al. 2022)',
        'typicality': '0.5-0.7 (Glow, single image)',
        'likelihood ratio': '0.994 (PixelCNN++; Ren et al. 2019)',
        'input complexity': '0.998 (Glow; Serrà et al. 2020)',
        'DoSE': '≈1.0 (Morningstar et al. 2021)',
    },
    ('cifar10', 'svhn_cropped'): {
        'log p(x)': '0.06 (Glow; Bergamin et al. 2022)',
        'typicality': '0.87 (Glow, single image)',
        'likelihood ratio': '0.930 (PixelCNN++); 0.064 reimplemented with Glow',
        'input complexity': '0.950 (Glow; Serrà et al. 2020); 0.784 in a replication',
        'DoSE': '0.955-0.97 (Glow; Morningstar et al. 2021)',
        'WAIC': '1.000 (Glow, 5 seeds; Choi et al. 2018)',
    },
}


def reported_auroc(in_name: str, label: str, score: str) -> str:
  """The published AUROC of a score on a pair, or '' where none is recorded."""
  for prefix, value in SCORE_AUROC_REPORTED.get((in_name, label), {}).items():
    if score == prefix or score.startswith(prefix + ' ('):
      return value
  return ''
