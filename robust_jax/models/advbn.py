"""AdvBN (Shu et al., NeurIPS 2021): a layer that perturbs the batch statistics of features adversarially.

For features f [B, ..., C] the layer computes, per group of `group_size` examples (all of them when None)
and per channel, the mean mu over the group's examples and positions, and returns

    f_adv = (f - mu) * s_sigma + mu * s_mu          (then max(., 0) when `clamp`)

i.e. features whose channel mean is mu * s_mu and whose standard deviation is sigma * s_sigma. The two
factors are variables of the collection `advbn` (`COLLECTION`), shaped [G, C] with G = B / group_size:
one pair per group, shared by the group's examples, as the reference's per-GPU attack. sigma cancels in the
formula (the reference computes it and never uses it); it is sown, with mu, into `intermediates` for
inspection.

Without the `advbn` collection the layer is the identity (test time, `model.init`). To perturb:

    pert = init_perturbation(model.apply, variables, x)      # ones, shaped for this batch
    logits = model.apply({**variables, 'advbn': pert}, x)     # perturbed forward, differentiable in pert

and `robust_jax.attacks.feature_stats.maximize` runs the sign-ascent PGD over `pert`. Any Linen network can
insert the layer; gradients flow through mu into the layers before it as through any other layer (the
AdvBN method stops them at its frozen front).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

COLLECTION = "advbn"
FACTORS = ("s_mu", "s_sigma")


def _groups(batch: int, group_size: Optional[int]) -> int:
    g = group_size or batch
    if g <= 0 or batch % g:
        raise ValueError(f"AdvBN group_size={group_size} must divide the batch of {batch} examples")
    return batch // g


class AdvBN(nn.Module):
    """Adversarial perturbation of per-group, per-channel feature statistics (see the module docstring).

    group_size: examples per statistics group (None: the whole batch). The reference computes statistics
      and solves the attack per GPU: 64 images per group at a global batch of 256.
    clamp: apply max(., 0) after the perturbation (ResNets: the input is post-ReLU; DenseNet: False).
    epsilon: added to the unbiased variance before the square root (only the sown sigma uses it).
    """

    group_size: Optional[int] = None
    clamp: bool = True
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, f):
        active = self.has_variable(COLLECTION, "s_mu") or (
            self.is_mutable_collection(COLLECTION) and not self.is_initializing())
        if not active:
            return f
        if f.ndim < 2:
            raise ValueError(f"AdvBN expects features [batch, ..., channels], got shape {f.shape}")
        b, c = f.shape[0], f.shape[-1]
        g = _groups(b, self.group_size)
        s_mu = self.variable(COLLECTION, "s_mu", jnp.ones, (g, c), jnp.float32).value
        s_sigma = self.variable(COLLECTION, "s_sigma", jnp.ones, (g, c), jnp.float32).value
        if s_mu.shape != (g, c) or s_sigma.shape != (g, c):
            raise ValueError(f"AdvBN perturbation of shape {s_mu.shape}/{s_sigma.shape} does not fit features "
                             f"{f.shape} in {g} group(s): expected ({g}, {c}); make it with init_perturbation "
                             "for this batch")
        x = f.astype(jnp.float32).reshape((g, b // g) + f.shape[1:])
        axes = tuple(range(1, x.ndim - 1))
        mu = jnp.mean(x, axes, keepdims=True)
        n = x.size // (g * c)
        var = jnp.sum(jnp.square(x - mu), axes, keepdims=True) / max(n - 1, 1)
        self.sow("intermediates", "mean", mu.reshape(g, c))
        self.sow("intermediates", "std", jnp.sqrt(var + self.epsilon).reshape(g, c))
        shape = (g,) + (1,) * (x.ndim - 2) + (c,)
        s_sigma, s_mu = s_sigma.reshape(shape), s_mu.reshape(shape)
        # = (x - mu) * s_sigma + mu * s_mu, written so that zeros of post-ReLU features give exactly 0 whenever
        # s_mu == s_sigma, whatever XLA fuses (an FMA of the textbook form leaves a rounding residue there),
        # as the reference's order of operations does in PyTorch: the clamp's gradient at 0 depends on it.
        y = x * s_sigma + mu * (s_mu - s_sigma)
        if self.clamp:
            # torch.clamp(min=0) as in the reference's torch 1.7: its gradient passes at exactly 0 (subgradient
            # 1 since PyTorch 0.4.1; recent releases, e.g. the 2.14 of our parity tests, give 0 there instead).
            # It matters at s = 1, where post-ReLU zeros map to exactly 0 again: about half the positions.
            y = jnp.where(y >= 0, y, 0.0)
        return y.reshape(f.shape).astype(f.dtype)


def init_perturbation(apply_fn, variables, *args, **kwargs):
    """The identity perturbation (all ones) of every AdvBN layer that `apply_fn(variables, *args, **kwargs)`
    runs, shaped for this batch: a dict to pass as `variables['advbn']`. Nothing is computed (shapes only)."""
    def shapes(v):
        return apply_fn(v, *args, mutable=[COLLECTION], **kwargs)[1]

    state = jax.eval_shape(shapes, variables)
    if COLLECTION not in state:
        raise ValueError("no AdvBN layer ran in this forward pass: nothing to perturb")
    return jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), state[COLLECTION])


def perturb_features(f, s_mu, s_sigma, *, group_size: Optional[int] = None, clamp: bool = True):
    """The layer as a function: f_adv for factors [G, C] (a convenience for code that holds features)."""
    return AdvBN(group_size, clamp).apply({COLLECTION: {"s_mu": s_mu, "s_sigma": s_sigma}}, f)
