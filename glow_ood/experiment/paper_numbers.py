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
