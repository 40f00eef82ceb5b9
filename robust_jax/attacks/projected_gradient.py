"""FGSM and projected gradient descent (PGD) for Linf and L2 threat models.

An attack is a pure, jit-able function of `(logits_fn, x, y, key)` where `logits_fn(x) -> logits`
closes over the model variables and mode. It is composed from an initialiser, a steepest-ascent step,
a projection onto the eps-ball intersected with the box `bounds` (default [0,1]) and a per-example loss
(the geometry from `primitives`), iterated inside one `jax.lax.fori_loop` (a `while_loop` for the
early-stopping variant), so compile time does not grow with the number of steps. All operations are per
example. Returns `stop_gradient(x_adv)`.

Speed on XLA:CPU: the loop body holds the model's input-gradient convolutions, which XLA:CPU runs fast only
when their kernels are in the canonical layout; our models get that from `models.layers.conv_general_dilated`
(benchmarks/README.md). A model of your own with plain `nn.Conv` runs 2-4x slower per step inside this loop
on CPU; pass `conv_general_dilated=robust_jax.models.layers.conv_general_dilated` to its `nn.Conv`s.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.attacks import losses as losses_lib
from robust_jax.attacks import primitives as prim
from robust_jax.attacks.primitives import ascent_step, per_example_norm, project  # noqa: F401 (public API)
from robust_jax.checks import check_bounds, check_images, check_labels

NORMS = prim.NORMS


def random_init(key, x, *, norm: str, eps: float, mode: Union[bool, str], init_std: float = 1e-3,
                bounds=prim.UNIT_BOX):
    """Start point. mode: False/'none' = x; True/'uniform' = uniform in the eps-ball, clipped into the
    box (`primitives.uniform_start`); 'normal' = x + init_std * N(0, I), not clipped, as the TRADES/MART
    references start (the first step's projection brings it back)."""
    mode = {True: "uniform", False: "none"}.get(mode, mode)
    if mode == "none":
        return x
    if mode == "normal":
        return prim.gaussian_start(key, x, std=init_std)
    if mode != "uniform":
        raise ValueError(f"random_start must be True/False/'uniform'/'normal'/'none', got {mode!r}")
    return prim.uniform_start(key, x, norm=norm, eps=eps, bounds=bounds)


def _check(norm, eps, step_size, steps):
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    concrete = not any(isinstance(v, jax.core.Tracer) for v in (eps, step_size))
    if concrete and (eps < 0 or step_size < 0):
        raise ValueError(f"eps and step_size must be >= 0, got eps={eps}, step_size={step_size}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")


def pgd(logits_fn: Callable, x, y, key, *, norm: str = "linf", eps: float, step_size: float, steps: int,
        loss: Union[str, Callable] = "ce", random_start: Union[bool, str] = True, init_std: float = 1e-3,
        targeted: bool = False, early_stop: bool = False, bounds=prim.UNIT_BOX,
        step_setup: Optional[Callable] = None):
    """Projected gradient ascent on `loss(logits_fn(x_adv), y)`.

    targeted=True: `y` are target classes and the attack descends the loss towards them.
    early_stop=True: an example stops moving once it is misclassified (or hits its target), and the
    loop ends when all have; the returned point is then the first successful one.
    `loss` may be a callable `loss(logits, y) -> [B]`, e.g. a KL to fixed clean logits for TRADES.
    `y`: int labels [B] in [0, K), or, for the 'ce' loss and callables, soft targets [B, K] (mixup); checked
    against the model's K when the attack is traced (values only where `y` is concrete, i.e. not under `jit`).
    bounds=(lo, hi): the box of valid inputs; x must lie in it and every iterate is clipped into it.
    step_setup: per-step randomisation of the attack (ARD and PRM, `attacks.ard_prm`), None for plain PGD.
    `step_setup(key_i, x_adv) -> (x_start, logits_fn_i)` is called at the start of step i with
    key_i = fold_in(key, i); that step differentiates `logits_fn_i` at `x_start` and steps from there
    (projection and clipping as usual). Keys of the start point and of the steps are independent, so a
    step_setup that changes nothing gives plain PGD's result.
    """
    _check(norm, eps, step_size, steps)
    if step_setup is not None and key is None:
        raise ValueError("pgd with step_setup needs a key (its steps are randomised)")
    bounds = check_bounds(bounds)
    check_images(x, "x", bounds)
    loss_fn = losses_lib.get(loss)
    sign = -1.0 if targeted else 1.0

    soft_ok = callable(loss) or loss == "ce"
    hard_y = y if np.ndim(y) != 2 else jnp.argmax(y, axis=-1)

    def gradient(fn, xa):
        def objective(z):
            logits = fn(z)
            check_labels(y, x.shape[0], "y", num_classes=logits.shape[-1], soft=soft_ok)
            return sign * jnp.sum(loss_fn(logits, y)), logits
        return jax.grad(objective, has_aux=True)(xa)

    def success(logits):
        pred = jnp.argmax(logits, axis=-1)
        return pred == hard_y if targeted else pred != hard_y

    def update(i, xa, active):
        start, fn = (xa, logits_fn) if step_setup is None else step_setup(jax.random.fold_in(key, i), xa)
        g, logits = gradient(fn, start)
        new = project(start + ascent_step(g, norm=norm, step_size=step_size), x, norm=norm, eps=eps,
                      bounds=bounds)
        done = success(logits)
        if active is None:
            return new, done
        move = (active & ~done).reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(move, new, xa), done

    x0 = random_init(key, x, norm=norm, eps=eps, mode=random_start, init_std=init_std, bounds=bounds)
    if not early_stop:
        x_adv = jax.lax.fori_loop(0, steps, lambda i, xa: update(i, xa, None)[0], x0)
        return jax.lax.stop_gradient(x_adv)

    def cond(carry):
        i, _, active = carry
        return (i < steps) & jnp.any(active)

    def body(carry):
        i, xa, active = carry
        xa, done = update(i, xa, active)
        return i + 1, xa, active & ~done

    _, x_adv, _ = jax.lax.while_loop(cond, body, (0, x0, jnp.ones(x.shape[0], bool)))
    return jax.lax.stop_gradient(x_adv)


def fgsm(logits_fn: Callable, x, y, *, norm: str = "linf", eps: float, loss: Union[str, Callable] = "ce",
         targeted: bool = False, bounds=prim.UNIT_BOX):
    """One full-size gradient step from x (Goodfellow et al.); `pgd` with steps=1, step_size=eps."""
    return pgd(logits_fn, x, y, None, norm=norm, eps=eps, step_size=eps, steps=1, loss=loss,
               random_start=False, targeted=targeted, bounds=bounds)
