"""The interface every invertible layer shares."""

import flax.linen as nn


class InvertibleLayer(nn.Module):
  """A layer whose `__call__(x, inverse)` returns (output, log|det| per example).

  Subclasses implement `__call__`; `forward` and `inverse` name the two directions.
  The inverse's log-det is the negation of the forward's.
  """

  def forward(self, x):
    """x -> (y, logdet [batch])."""
    return self(x, inverse=False)

  def inverse(self, y):
    """y -> (x, logdet [batch]), logdet = -forward's."""
    return self(y, inverse=True)
