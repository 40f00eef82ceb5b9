"""The VQGAN training objective (taming's VQLPIPSWithDiscriminator without the perceptual term), as one
loss the generic train step differentiates.

    loss_vq = mean|x - dec| (or squared: vqgan.rec_loss='l2'; on the [-1,1] scale) + codebook_weight * qloss
              + disc_factor(step) * d_weight * (-mean D(dec))                    [if vqgan.disc_weight > 0]
    loss_d  = disc_factor(step) * hinge(D(x), D(sg[dec]))  (or 'vanilla': softplus)

d_weight is taming's adaptive weight, |grad_L nll| / (|grad_L g_loss| + 1e-4) clamped to [0, 1e4] times
`disc_weight`, with L the decoder's last conv kernel (`adaptive_weight=False`: `disc_weight` alone);
disc_factor is 0 before `disc_start` steps. One optimiser updates params {'vqgan', 'disc'}: the generator
terms see the discriminator's parameters through stop_gradient and the discriminator loss sees the
reconstructions through stop_gradient, so the gradient of the SUM w.r.t. each group is that group's own
gradient (tests/test_vqgan_training.py checks it). Difference from taming, documented: both groups update
at the same step from the same parameters, where Lightning alternates the generator and discriminator
steps. The perceptual term (`perceptual_weight` > 0: + weight * LPIPS(x, dec) in the reconstruction loss,
as taming) needs LPIPS-VGG weights converted from files (`vqgan.lpips_weights`, see lpips.py); they reach
the step as frozen variables.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from robust_jax.vqgan_training import lpips
from robust_jax.vqgan_training.discriminator import PatchDiscriminator

REC_LOSSES = ("l1", "l2")
DISC_LOSSES = ("hinge", "vanilla")


def code_statistics(indices, n_embed: int):
    """(fraction of the codebook used, perplexity exp(H(code histogram))) over the given codes."""
    counts = jnp.bincount(indices.reshape(-1), length=n_embed)
    p = counts / jnp.maximum(counts.sum(), 1)
    return jnp.mean(counts > 0), jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def psnr(x, dec):
    """PSNR (dB) of the [0,1] reconstruction (dec clipped, as Q(x) is) against x in [0,1], per batch."""
    mse = jnp.mean(jnp.square((jnp.clip(dec, -1, 1) + 1) / 2 - x))
    return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-12))


def last_layer_grad(h, kernel, cotangent):
    """Gradient w.r.t. the decoder's last 3x3 conv kernel of a loss whose gradient w.r.t. the decoder
    output is `cotangent`; `h` is that conv's input."""
    conv = lambda k: jax.lax.conv_general_dilated(h, k, (1, 1), ((1, 1), (1, 1)),
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.vjp(conv, kernel)[1](cotangent)[0]


class VQGANObjective:
    """`loss(params, model_state, batch, key, step)` for `state.make_train_step`; `init` builds the variables."""

    def __init__(self, model, cfg):
        if cfg.rec_loss not in REC_LOSSES:
            raise ValueError(f"vqgan.rec_loss must be one of {REC_LOSSES}, got {cfg.rec_loss!r}")
        if cfg.disc_loss not in DISC_LOSSES:
            raise ValueError(f"vqgan.disc_loss must be one of {DISC_LOSSES}, got {cfg.disc_loss!r}")
        self.model, self.cfg = model, cfg
        self.disc = PatchDiscriminator(cfg.disc_channels, cfg.disc_layers) if cfg.disc_weight > 0 else None
        self.frozen = None
        if cfg.perceptual_weight > 0:
            if not cfg.lpips_weights:
                raise ValueError("vqgan.perceptual_weight > 0 needs vqgan.lpips_weights: a msgpack converted with "
                                 "robust_jax.vqgan_training.lpips.convert_files (VGG-16 + lpips lin weights)")
            self.lpips = lpips.LPIPS()
            self.frozen = {"lpips": lpips.load(cfg.lpips_weights)}

    def init(self, key, image_shape):
        """{'params': {'vqgan', ['disc']}, ['batch_stats': {'disc'}]}."""
        k_vq, k_d = jax.random.split(key)
        x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
        variables = {"params": {"vqgan": self.model.init(k_vq, x)["params"]}}
        if self.disc is not None:
            d = self.disc.init(k_d, jnp.zeros((2,) + tuple(image_shape)), train=False)
            variables["params"]["disc"] = d["params"]
            variables["batch_stats"] = {"disc": d["batch_stats"]}
        return variables

    def reconstruction_loss(self, target, dec, frozen=None):
        """Pixel loss (+ perceptual_weight * LPIPS when configured), both means over the batch."""
        diff = target - dec
        loss = jnp.mean(jnp.abs(diff) if self.cfg.rec_loss == "l1" else jnp.square(diff))
        if frozen is not None:
            loss = loss + self.cfg.perceptual_weight * jnp.mean(self.lpips.apply(frozen["lpips"], target, dec))
        return loss

    def _disc(self, params, stats, x):
        logits, new = self.disc.apply({"params": params, "batch_stats": stats}, x, train=True,
                                      mutable=["batch_stats"])
        return logits, new["batch_stats"]

    def adaptive_weight(self, target, dec, h, kernel, disc_params, stats, frozen=None):
        """taming's calculate_adaptive_weight, gradients at the last decoder layer, detached."""
        g_nll = last_layer_grad(h, kernel, jax.grad(lambda d: self.reconstruction_loss(target, d, frozen))(dec))
        g_gen = last_layer_grad(h, kernel, jax.grad(lambda d: -jnp.mean(self._disc(disc_params, stats, d)[0]))(dec))
        w = jnp.linalg.norm(g_nll) / (jnp.linalg.norm(g_gen) + 1e-4)
        return jax.lax.stop_gradient(jnp.clip(w, 0.0, 1e4))

    def disc_loss(self, logits_real, logits_fake):
        if self.cfg.disc_loss == "hinge":
            return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))
        return 0.5 * (jnp.mean(jax.nn.softplus(-logits_real)) + jnp.mean(jax.nn.softplus(logits_fake)))

    def loss(self, params, model_state, batch, key, step, frozen=None):
        cfg = self.cfg
        x = batch["image"]
        target = 2.0 * x - 1.0
        out, inter = self.model.apply({"params": params["vqgan"]}, x, train=True, mutable=["intermediates"],
                                      rngs={"dropout": key})
        dec = out["dec"]
        nll = self.reconstruction_loss(target, dec, frozen)
        loss = nll + cfg.codebook_weight * out["qloss"]
        usage, perplexity = code_statistics(out["indices"], self.model.n_embed)
        metrics = {"rec_loss": nll, "qloss": out["qloss"], "psnr": psnr(x, dec), "code_usage": usage,
                   "perplexity": perplexity}
        if self.disc is None:
            return loss, (model_state, {"loss": loss, **metrics})
        factor = jnp.where(step >= cfg.disc_start, cfg.disc_factor, 0.0)
        stats = model_state["batch_stats"]["disc"]
        frozen_disc = jax.lax.stop_gradient(params["disc"])
        logits_fake, stats = self._disc(frozen_disc, stats, dec)
        g_loss = -jnp.mean(logits_fake)
        weight = cfg.disc_weight
        if cfg.adaptive_weight:
            h = inter["intermediates"]["decoder"]["conv_out_input"][0]
            kernel = params["vqgan"]["decoder"]["conv_out"]["kernel"]
            weight = weight * self.adaptive_weight(target, dec, h, kernel, frozen_disc, stats, frozen)
        loss = loss + factor * weight * g_loss
        logits_real, stats = self._disc(params["disc"], stats, target)
        logits_fake_d, stats = self._disc(params["disc"], stats, jax.lax.stop_gradient(dec))
        d_loss = factor * self.disc_loss(logits_real, logits_fake_d)
        metrics.update(g_loss=g_loss, d_loss=d_loss, d_weight=weight, disc_factor=factor,
                       logits_real=jnp.mean(logits_real), logits_fake=jnp.mean(logits_fake_d))
        total = loss + d_loss
        return total, ({"batch_stats": {"disc": stats}}, {"loss": loss, **metrics})
