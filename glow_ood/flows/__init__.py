"""Invertible Flax layers. Each is an `InvertibleLayer`: `layer(x, inverse=False)` returns
(output, log|det| per example), `forward(x)` and `inverse(y)` name the two directions, and
the inverse's log-det is the negation of the forward's. `Glow` composes them."""

from glow_ood.flows.actnorm import ActNorm
from glow_ood.flows.base import InvertibleLayer
from glow_ood.flows.coupling import (AdditiveCoupling, AffineCoupling, GlowCouplingNet,
                                     HighwayCouplingNet, ZeroInitConv, make_coupling_net)
from glow_ood.flows.glow import LOGDET_KINDS, FlowStep, Glow, GlowOutput, latent_shapes
from glow_ood.flows.invconv import InvConv1x1, InvConv1x1LU, invconv_matrix, random_rotation
from glow_ood.flows.priors import SplitPrior, TopPrior, gaussian_log_prob
from glow_ood.flows.squeeze import Squeeze, squeeze, unsqueeze
