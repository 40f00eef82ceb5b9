"""ARD and PRM: the two randomisations of PGD that Mo et al. (NeurIPS 2022, spec/vit_at.md) add to the
adversarial training of Vision Transformers, and the schedule that fades them out.

Both are driven by one keep probability p:
- ARD (attention random drop): at every PGD step each attention block passes gradient through its attention
  probabilities with probability p (one Bernoulli draw per block and step, shared over batch, heads and
  tokens); the others are `stop_gradient`ed. Forward values never change. It reaches the model through the
  `attn_grad_keep` hook (bool[num_attention_blocks]) of models that have it (ViT/DeiT, Swin).
- PRM (perturbation random masking): at every PGD step exactly m = floor(N (1 - p)) of the N patches of a
  `patch` x `patch` grid (a random permutation, the same for the whole batch and every channel) have their
  perturbation reset to zero before the forward pass; the step (gradient at the masked point, sign step,
  projection, clip) then applies to every pixel, so PRM resets those patches rather than freezing them. The
  final point is not re-masked. At p = 0 every step restarts from x: PGD-k is one sign step from the clean
  image.
- Schedule: p(t) = min(t / n_w, 1) * p_max, t the fractional training epoch (`keep_probability`).

`ard_prm_pgd` is the attack: `projected_gradient.pgd` with a per-step `step_setup` that draws the ARD switches
and the PRM mask from the step's key, all inside pgd's one `fori_loop`. With ARD and PRM off, use plain `pgd`
(what `methods.PGDAttack` does), whose compiled program is then exactly plain PGD's.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from robust_jax.attacks.projected_gradient import pgd


def keep_probability(epoch=None, *, keep_max: float = 1.0, warmup_epochs: float = 0.0):
    """The shared ARD/PRM schedule p(t) = min(t / n_w, 1) * p_max (t = `epoch`, fractional; n_w =
    `warmup_epochs`; p_max = `keep_max`). ARD's drop probability and PRM's masked fraction are 1 - p: they
    fall linearly from 1 to 1 - p_max over the first n_w epochs and stay there. warmup_epochs=0 or
    epoch=None (no training clock, e.g. a standalone attack): p_max. `epoch` may be traced."""
    if not 0.0 <= keep_max <= 1.0:
        raise ValueError(f"keep_max must lie in [0, 1], got {keep_max}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    if epoch is None or warmup_epochs == 0:
        return jnp.float32(keep_max)
    return jnp.minimum(jnp.asarray(epoch, jnp.float32) / warmup_epochs, 1.0) * keep_max


def ard_draw(key, num_blocks: int, keep):
    """ARD's per-step switches: bool[num_blocks], each True (the block's attention probabilities pass
    gradient) with probability `keep`, independently."""
    return jax.random.bernoulli(key, keep, (num_blocks,))


def num_masked_patches(num_patches: int, keep):
    """m = floor(N (1 - p)), PRM's number of masked patches (float32 arithmetic; `keep` may be traced)."""
    return jnp.floor(num_patches * (1.0 - jnp.asarray(keep, jnp.float32))).astype(jnp.int32)


def prm_mask(key, height: int, width: int, patch: int, keep):
    """PRM's mask: bool[1, height, width, 1], False on exactly `num_masked_patches(N, keep)` of the N patches
    of the `patch`-pixel grid (chosen by a random permutation), True elsewhere; shared by batch and channels."""
    if patch <= 0 or height % patch or width % patch:
        raise ValueError(f"PRM's patch size {patch} must be positive and divide the image size {height}x{width}")
    gh, gw = height // patch, width // patch
    n = gh * gw
    rank = jax.random.permutation(key, n)  # patch j is masked iff its rank is among the first m
    kept = (rank >= num_masked_patches(n, keep)).reshape(gh, gw)
    kept = jnp.repeat(jnp.repeat(kept, patch, axis=0), patch, axis=1)
    return kept[None, :, :, None]


def ard_prm_step_setup(hooked_logits_fn: Callable, x, *, keep, ard_blocks: int = 0, prm_patch: int = 0):
    """`pgd`'s `step_setup` for ARD (ard_blocks > 0: the number of attention blocks the switches cover) and/or
    PRM (prm_patch > 0: the patch size of its grid), at keep probability `keep`.

    `hooked_logits_fn(**hooks) -> logits_fn`: the model's logits function with hooks (ARD passes
    `attn_grad_keep=`); called with no hooks when ARD is off. The PRM-masked start point is
    `where(mask, x_adv, x)` (delta zeroed exactly on the masked patches, unchanged elsewhere)."""
    if ard_blocks < 0 or prm_patch < 0:
        raise ValueError(f"ard_blocks and prm_patch must be >= 0, got {ard_blocks}, {prm_patch}")
    height, width = x.shape[1:3]

    def setup(key, xa):
        k_ard, k_prm = jax.random.split(key)
        hooks = {}
        if ard_blocks:
            hooks["attn_grad_keep"] = ard_draw(k_ard, ard_blocks, keep)
        if prm_patch:
            xa = jnp.where(prm_mask(k_prm, height, width, prm_patch, keep), xa, x)
        return xa, hooked_logits_fn(**hooks)

    return setup


def ard_prm_pgd(hooked_logits_fn: Callable, x, y, key, *, keep, ard_blocks: int = 0, prm_patch: int = 0,
                **pgd_kwargs):
    """PGD with ARD (`ard_blocks` > 0) and/or PRM (`prm_patch` > 0) at keep probability `keep` (see the module
    docstring); `pgd_kwargs` are `pgd`'s (norm, eps, step_size, steps, loss, random_start, bounds, ...).
    `hooked_logits_fn(**hooks) -> logits_fn`, e.g.
    `lambda **h: lambda z: model.apply(variables, z, train=False, **h)`."""
    setup = ard_prm_step_setup(hooked_logits_fn, x, keep=keep, ard_blocks=ard_blocks, prm_patch=prm_patch)
    return pgd(hooked_logits_fn(), x, y, key, step_setup=setup, **pgd_kwargs)
