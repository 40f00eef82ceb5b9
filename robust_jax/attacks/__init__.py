"""Attacks: pure functions `attack(logits_fn, x, y, key, **settings) -> x_adv` on [0,1] images."""
from robust_jax.attacks.losses import cross_entropy, kl_divergence, margin
from robust_jax.attacks.pgd import fgsm, pgd, project

__all__ = ["pgd", "fgsm", "project", "cross_entropy", "margin", "kl_divergence"]
