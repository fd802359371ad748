"""Likelihood models beside Glow: PixelCNN++ and a VAE, and their shared output distribution.

Both follow the model protocol of glow_ood.model_kinds (__call__(y, train), evaluate(y),
sample(key, image_shape, num, temperature), output.terms()).
"""

from glow_ood.models.pixelcnn import PixelCNNOutput, PixelCNNPP
from glow_ood.models.vae import VAE, VAEOutput
