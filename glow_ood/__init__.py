"""glow_ood: Glow / CV-Glow in JAX for studying likelihood-based OOD detection."""
