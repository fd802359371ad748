"""Allowed values declared once, as a field's Literal annotation, and checked from it."""
import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import pytest

from glow_ood import flows
from glow_ood import literal_fields
from glow_ood import model_kinds
from glow_ood.models.vae import VAE

SHAPES = ('round', 'square')


@dataclasses.dataclass
class Toy:
  shape: Literal[SHAPES] = 'round'
  size: int = 3


def test_choices_come_from_the_annotation():
  assert literal_fields.choices(Toy, 'shape') == SHAPES
  assert literal_fields.choices(Toy, 'size') is None
  literal_fields.check(Toy())
  literal_fields.check(Toy(size=-1))   # only Literal fields are checked here
  with pytest.raises(ValueError, match=r"Toy.shape must be one of \('round', 'square'\), got 'oval'"):
    literal_fields.check(Toy(shape='oval'))


@pytest.mark.parametrize('field, allowed', [('coupling', flows.glow.COUPLINGS),
                                            ('invconv', flows.glow.INVCONVS),
                                            ('recompute', flows.glow.RECOMPUTES),
                                            ('dtype', flows.glow.DTYPES)])
def test_glow_checks_every_literal_field_and_the_config_reads_the_same(field, allowed):
  assert model_kinds.KINDS['glow'].choices(field) == allowed
  with pytest.raises(ValueError, match=f'Glow.{field} must be one of'):
    flows.Glow(2, 1, **{field: 'nonsense'}).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))


def test_vae_decoder_scale_checked_from_its_annotation():
  assert model_kinds.KINDS['vae'].choices('decoder_scale') == ('per_pixel', 'per_channel')
  with pytest.raises(ValueError, match='VAE.decoder_scale must be one of'):
    VAE(image_shape=(8, 8, 1), latent_dim=2, num_filters=4, num_blocks=1,
        decoder_scale='per_image').init(
            {'params': jax.random.key(0), 'latent': jax.random.key(1)}, jnp.zeros((1, 8, 8, 1)))
