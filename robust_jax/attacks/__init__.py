"""Attacks: pure functions `attack(logits_fn, x, y, key, **settings) -> x_adv` on images in a box
`bounds=(lo, hi)` (default [0,1]).

White-box: `pgd`, `fgsm` (projected_gradient.py), `apgd` (APGD-CE/-DLR/-T, auto_pgd.py), `fab` (FAB/FAB-T,
fab_attack.py). Black-box: `square` (Square Attack, square_attack.py). DAT's one-step L2 attack on VQGAN reconstructions:
`discrete_l2_attack` (discrete.py; its loss is a function of (x, key)). PGD with the ViT recipes' per-step
randomisations ARD and PRM and their schedule: `ard_prm_pgd`, `keep_probability` (ard_prm.py). The ensemble: `AutoAttack`
(autoattack.py), an exact port of Croce & Hein's AutoAttack checked against `pyautoattack` on the same
weights and points. The geometry they share (per-example norms, projection onto the eps-ball and the box,
steepest-ascent steps, random starts) lives in primitives.py. Module names differ from the functions they
export, so `robust_jax.attacks.pgd` is always the function.
"""
from robust_jax.attacks.ard_prm import ard_prm_pgd, keep_probability
from robust_jax.attacks.auto_pgd import apgd, apgd_run
from robust_jax.attacks.autoattack import AutoAttack, AutoAttackResult
from robust_jax.attacks.discrete import discrete_l2_attack
from robust_jax.attacks.fab_attack import fab
from robust_jax.attacks.losses import cross_entropy, dlr, dlr_targeted, kl_divergence, margin
from robust_jax.attacks.primitives import per_example_norm, project
from robust_jax.attacks.projected_gradient import fgsm, pgd
from robust_jax.attacks.square_attack import square

__all__ = ["pgd", "fgsm", "project", "per_example_norm", "apgd", "apgd_run", "fab", "square", "AutoAttack",
           "AutoAttackResult", "discrete_l2_attack", "ard_prm_pgd", "keep_probability",
           "cross_entropy", "margin", "kl_divergence", "dlr", "dlr_targeted"]
