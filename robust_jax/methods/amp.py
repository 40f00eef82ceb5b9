"""Adversarially optimised mixup (AMP; Bunk et al., arXiv 2103.11589): PGD in the space BETWEEN data points.

Known from the paper's abstract (no public code): mixup and adversarial training are combined by probing the
interpolation between two training points with PGD, back-propagating through the mixup interpolation;
optimising the mixup ratio and a "geometrical label assignment" are explored. Everything else here is OUR
reconstruction (../shared/spec/amp.md, docs/amp.md), a family of documented variants:

- pairs (x_i, y_i), (x_j, y_j) from an in-batch permutation, lambda0 ~ Beta(alpha, alpha) per pair;
- variant 'endpoints': the PGD variables are the endpoints z_i = x_i + delta_i, z_j = x_j + delta_j, each in
  its eps-ball (Linf or L2) and in [0,1]; the mixed point lambda z_i + (1 - lambda) z_j is clipped to [0,1]
  and the gradient reaches the endpoints through the interpolation. Variant 'mixed_point': one perturbation
  of the clean mixed point itself (PGD on the mixup point, for comparison; lambda stays fixed);
- lambda_mode 'optimised': lambda is a PGD variable too (a sign or plain step of `lambda_step`), projected
  to [0,1] (lambda_window=0) or to [lambda0 - window, lambda0 + window] within [0,1];
- labels: 'standard' weight lambda on y_i; 'geometric' weight w = clip(<x~ - x_j, x_i - x_j> / |x_i - x_j|^2,
  0, 1) from where the mixed point x~ lies between the CLEAN endpoints, stop-gradient during the attack
  (identical endpoints: w = lambda). With the standard label, dL/dlambda holds CE(f, y_i) - CE(f, y_j), which
  pushes lambda towards the worse-predicted endpoint by the label alone; the geometric rule removes that term;
- loss = CE(f(x~_adv), soft label) + clean_weight CE(f(x), y) + mixup_weight CE(f(clean mix), lambda0 label).

The attack and the lambda steps run in one `jax.lax.fori_loop`, with the model in `attack.train_mode`
(batch or running statistics) and without updating BN statistics; the training forward passes run in train
mode. Endpoint i starts from `key`, endpoint j from `fold_in(key, 1)` (random_start as `attacks.pgd`), so
lambda = 1 reproduces PGD-AT with the same key. The defaults (alpha 1, lambda_step 0.1, window 0, sign
step, term weights 0) are ours: the paper's are unknown.
"""
from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp

from robust_jax.attacks import primitives as prim
from robust_jax.attacks.losses import cross_entropy
from robust_jax.attacks.projected_gradient import random_init
from robust_jax.checks import check_batch
from robust_jax.methods.base import (ATTACK_CONFIG, Classifier, Method, PGDAttack, attack_from_config, block_values,
                                     training_rng)

LAMBDA_MODES = ("fixed", "optimised")
LABEL_RULES = ("standard", "geometric")
VARIANTS = ("endpoints", "mixed_point")


@dataclasses.dataclass(frozen=True)
class AMPSettings:
    """The AMP-specific settings (`config.method.amp`); defaults are ours (see the module docstring)."""

    alpha: float = 1.0
    lambda_mode: str = "fixed"
    lambda_step: float = 0.1
    lambda_window: float = 0.0
    lambda_sign: bool = True
    label_rule: str = "standard"
    variant: str = "endpoints"
    clean_weight: float = 0.0
    mixup_weight: float = 0.0

    def __post_init__(self):
        for name, value, allowed in (("lambda_mode", self.lambda_mode, LAMBDA_MODES),
                                     ("label_rule", self.label_rule, LABEL_RULES),
                                     ("variant", self.variant, VARIANTS)):
            if value not in allowed:
                raise ValueError(f"amp.{name} must be one of {allowed}, got {value!r}")
        if self.variant == "mixed_point" and self.lambda_mode == "optimised":
            raise ValueError("amp.variant='mixed_point' perturbs the mixed point at a fixed lambda; "
                             "lambda_mode='optimised' needs variant='endpoints'")
        if self.alpha <= 0 or self.lambda_window < 0 or self.lambda_step < 0:
            raise ValueError(f"amp.alpha must be > 0 and lambda_window, lambda_step >= 0, got {self}")


CONFIG = dict(attack=ATTACK_CONFIG, amp={f.name: f.default for f in dataclasses.fields(AMPSettings)})


# ------------------------------------------------------------------------------------------ pairs, mixing
def sample_pairs(key, batch_size: int, alpha: float):
    """(perm, lambda0): partner j = perm[i] of each example i, and lambda0 ~ Beta(alpha, alpha) per pair."""
    k_perm, k_lam = jax.random.split(key)
    return jax.random.permutation(k_perm, batch_size), jax.random.beta(k_lam, alpha, alpha, (batch_size,))


def _per_example(v, like):
    """[B] -> [B, 1, ..., 1], to broadcast against images `like`."""
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def interpolate(z_i, z_j, lam):
    """lam z_i + (1 - lam) z_j, clipped to [0,1]. Between two points of the box the clip binds by rounding
    only, so its gradient is passed straight through (jnp.clip would halve it where a pixel sits on 0 or 1)."""
    l = _per_example(lam, z_i)
    m = l * z_i + (1.0 - l) * z_j
    return m + jax.lax.stop_gradient(prim.clip_to_box(m) - m)


def geometric_weight(x_mix, x_i, x_j, lam):
    """w = clip(<x~ - x_j, x_i - x_j> / |x_i - x_j|^2, 0, 1): where x~ projects onto the clean segment
    (1 at x_i, 0 at x_j); `lam` where the endpoints coincide (the label is then y_i = y_j or undefined)."""
    d = (x_i - x_j).reshape(x_i.shape[0], -1)
    dot = jnp.sum((x_mix - x_j).reshape(d.shape) * d, -1)
    d2 = jnp.sum(d * d, -1)
    apart = d2 > 0
    return jnp.where(apart, jnp.clip(dot / jnp.where(apart, d2, 1.0), 0.0, 1.0), lam)


def label_weight(rule: str, x_mix, x_i, x_j, lam):
    """The weight of y_i in the soft label of x_mix: lam ('standard') or the geometric weight, which is a
    constant for every gradient ('geometric')."""
    if rule == "standard":
        return lam
    return jax.lax.stop_gradient(geometric_weight(x_mix, x_i, x_j, lam))


def mixed_cross_entropy(logits, y_i, y_j, w):
    """CE with the soft label w y_i + (1 - w) y_j, written as w CE(y_i) + (1 - w) CE(y_j) (equal by linearity;
    integer labels, no one-hot of size num_classes needed)."""
    return w * cross_entropy(logits, y_i) + (1.0 - w) * cross_entropy(logits, y_j)


def dominant_label(y_i, y_j, w):
    """The label with the larger weight, for accuracies."""
    return jnp.where(w >= 0.5, y_i, y_j)


# --------------------------------------------------------------------------------------------- the attack
def mixed_point(points, lam):
    """x~ of the PGD variables: the interpolation of the endpoints (z_i, z_j), or the point itself (x~,)."""
    return interpolate(points[0], points[1], lam) if len(points) == 2 else points[0]


def attack_objective(logits_fn, points, lam, x_i, x_j, y_i, y_j, *, label_rule: str):
    """Per-example CE of the mixed point of `points` ((z_i, z_j) or (x~,)) with its soft label, and x~."""
    x_mix = mixed_point(points, lam)
    w = label_weight(label_rule, x_mix, x_i, x_j, lam)
    return mixed_cross_entropy(logits_fn(x_mix), y_i, y_j, w), x_mix


def lambda_bounds(lam0, window: float):
    """The interval lambda is projected to: [0,1] (window 0) or [lam0 - window, lam0 + window] within it."""
    if not window:
        return jnp.zeros_like(lam0), jnp.ones_like(lam0)
    return jnp.clip(lam0 - window, 0.0, 1.0), jnp.clip(lam0 + window, 0.0, 1.0)


def attack_points(logits_fn, x, y, perm, lam0, key, *, attack: PGDAttack = PGDAttack(),
                  amp: AMPSettings = AMPSettings()):
    """The PGD variables after `attack.steps` steps: (points, lambda), points = (z_i, z_j) (variant 'endpoints')
    or (x~,) ('mixed_point'). Every point takes `primitives.ascent_step`s and is projected to the eps-ball
    around its clean point and to [0,1]; lambda (lambda_mode 'optimised') takes sign or plain steps of
    lambda_step, projected to `lambda_bounds`. `attack`: eps/step_size/steps/norm/random_start of the points
    (its `loss` must be 'ce'; its `train_mode` is the caller's, in `logits_fn`)."""
    if attack.loss != "ce":
        raise ValueError(f"AMP's attack maximises the mixed cross-entropy; attack.loss must be 'ce', got {attack.loss!r}")
    x_i, x_j, y_i, y_j = x, x[perm], y, y[perm]
    centers = (x_i, x_j) if amp.variant == "endpoints" else (interpolate(x_i, x_j, lam0),)
    keys = [key] + [jax.random.fold_in(key, k) for k in range(1, len(centers))]
    starts = tuple(random_init(k, c, norm=attack.norm, eps=attack.eps, mode=attack.random_start)
                   for k, c in zip(keys, centers))
    lo, hi = lambda_bounds(lam0, amp.lambda_window)
    optimise_lambda = amp.lambda_mode == "optimised"

    def total(points, lam):
        per_example, _ = attack_objective(logits_fn, points, lam, x_i, x_j, y_i, y_j, label_rule=amp.label_rule)
        return jnp.sum(per_example)

    grad_fn = jax.grad(total, argnums=(0, 1) if optimise_lambda else 0)

    def step(_, carry):
        points, lam = carry
        grads = grad_fn(points, lam)
        g_points, g_lam = grads if optimise_lambda else (grads, None)
        points = tuple(prim.project(p + prim.ascent_step(g, norm=attack.norm, step_size=attack.step_size), c,
                                    norm=attack.norm, eps=attack.eps)
                       for p, g, c in zip(points, g_points, centers))
        if optimise_lambda:
            move = jnp.sign(g_lam) if amp.lambda_sign else g_lam
            lam = jnp.clip(lam + amp.lambda_step * move, lo, hi)
        return points, lam

    return jax.lax.stop_gradient(jax.lax.fori_loop(0, attack.steps, step, (starts, lam0)))


def amp_attack(logits_fn, x, y, perm, lam0, key, *, attack: PGDAttack = PGDAttack(),
               amp: AMPSettings = AMPSettings()):
    """PGD between the pairs (x, x[perm]) (`attack_points`): (x~_adv, lambda, label weight w of y)."""
    points, lam = attack_points(logits_fn, x, y, perm, lam0, key, attack=attack, amp=amp)
    x_mix = mixed_point(points, lam)
    return x_mix, lam, label_weight(amp.label_rule, x_mix, x, x[perm], lam)


# ------------------------------------------------------------------------------------------------ the loss
def amp_objective(apply_fn, params, model_state, batch, key, perm, lam0, *, attack: PGDAttack = PGDAttack(),
                  amp: AMPSettings = AMPSettings()):
    """`amp_loss` for given pairs: partner perm[i] of example i at ratio lam0[i] (tests pass the identity
    permutation or lambda in {0,1} to check the reductions to PGD-AT and mixup)."""
    classifier = Classifier(apply_fn)
    x, y = batch["image"], batch["label"]
    logits_fn = classifier.logits_fn(params, model_state, train=attack.train_mode)
    x_adv, lam, w = amp_attack(logits_fn, x, y, perm, lam0, key, attack=attack, amp=amp)
    y_j = y[perm]
    logits, model_state = classifier(params, model_state, x_adv, train=True, rng=training_rng(key, 0))
    adv_loss = jnp.mean(mixed_cross_entropy(logits, y, y_j, w))
    loss = adv_loss
    metrics = {"adv_loss": adv_loss,
               "adv_accuracy": jnp.mean(jnp.argmax(logits, -1) == dominant_label(y, y_j, w)),
               "lambda": jnp.mean(lam), "label_weight": jnp.mean(w)}
    if amp.clean_weight:
        clean_logits, model_state = classifier(params, model_state, x, train=True, rng=training_rng(key, 1))
        clean_loss = jnp.mean(cross_entropy(clean_logits, y))
        loss = loss + amp.clean_weight * clean_loss
        metrics.update(clean_loss=clean_loss, accuracy=jnp.mean(jnp.argmax(clean_logits, -1) == y))
    if amp.mixup_weight:
        mix_logits, model_state = classifier(params, model_state, interpolate(x, x[perm], lam0), train=True,
                                             rng=training_rng(key, 2))
        mixup_loss = jnp.mean(mixed_cross_entropy(mix_logits, y, y_j, lam0))
        loss = loss + amp.mixup_weight * mixup_loss
        metrics["mixup_loss"] = mixup_loss
    metrics["loss"] = loss
    return loss, (model_state, metrics)


def amp_loss(apply_fn, params, model_state, batch, key, *, attack: PGDAttack = PGDAttack(), alpha: float = 1.0,
             lambda_mode: str = "fixed", lambda_step: float = 0.1, lambda_window: float = 0.0,
             lambda_sign: bool = True, label_rule: str = "standard", variant: str = "endpoints",
             clean_weight: float = 0.0, mixup_weight: float = 0.0):
    """Mean CE of the model in train mode on the adversarially optimised mixed points with their soft labels,
    + clean_weight * clean CE + mixup_weight * plain-mixup CE; pairs and lambda0 drawn from `key`.
    The settings are `AMPSettings`' fields (the module docstring says what each does)."""
    check_batch(batch)
    amp = AMPSettings(alpha=alpha, lambda_mode=lambda_mode, lambda_step=lambda_step, lambda_window=lambda_window,
                      lambda_sign=lambda_sign, label_rule=label_rule, variant=variant, clean_weight=clean_weight,
                      mixup_weight=mixup_weight)
    k_pairs, k_attack = jax.random.split(key)
    perm, lam0 = sample_pairs(k_pairs, batch["image"].shape[0], amp.alpha)
    return amp_objective(apply_fn, params, model_state, batch, k_attack, perm, lam0, attack=attack, amp=amp)


class AMP(Method):
    CONFIG = CONFIG
    loss_fn = staticmethod(amp_loss)

    @classmethod
    def settings_from_config(cls, cfg, num_classes):
        return dict(attack=attack_from_config(cfg.attack), **block_values(cfg.amp, CONFIG["amp"]))
