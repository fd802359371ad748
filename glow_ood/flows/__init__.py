"""Invertible Flax layers. Each has forward(x) -> (y, logdet) and inverse(y) -> (x, logdet),
logdet per example, the inverse's the negation of the forward's."""

from glow_ood.flows.actnorm import ActNorm
from glow_ood.flows.coupling import (AdditiveCoupling, AffineCoupling, GlowCouplingNet,
                                     HighwayCouplingNet, ZeroInitConv, make_coupling_net)
from glow_ood.flows.glow import (LOGDET_KINDS, FlowStep, Glow, GlowOutput, glow_from_config,
                                 latent_shapes)
from glow_ood.flows.invconv import InvConv1x1, InvConv1x1LU, invconv_matrix, random_rotation
from glow_ood.flows.priors import SplitPrior, TopPrior, gaussian_log_prob
from glow_ood.flows.squeeze import Squeeze, squeeze, unsqueeze
