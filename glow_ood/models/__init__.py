"""Likelihood models beside Glow: PixelCNN++ and a VAE, and their shared output distribution."""
