"""Baselines from the same family as DCGMM: deep latent Gaussian mixture VAEs (and NSN)."""
