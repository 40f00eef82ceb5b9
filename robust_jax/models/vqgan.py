"""VQGAN (Esser et al., taming-transformers) in Flax: the image tokenizer DAT quantises images with.

    from robust_jax.models import vqgan
    model = vqgan.get("openimages_f8_16384")               # DAT's VQGAN (latent-diffusion's vq-f8)
    variables = vqgan.load("vqgan_f8.msgpack", model)      # converted with robust-jax-convert
    codes = model.apply(variables, x, method=model.encode)          # x: [B,H,W,3] in [0,1] -> int32 [B,H/8,W/8]
    x_rec = model.apply(variables, codes, method=model.decode_indices)
    x_q = vqgan.quantize(model, variables, x)                       # Q(x) in [0,1], no gradient (DAT)

Images are [0,1] at this boundary (taming works on [-1,1]: the model maps in and out). The architecture
follows taming's `Encoder`/`Decoder`/`VectorQuantizer2` exactly (see vqgan_blocks.py), so converted
PyTorch checkpoints give the same codes and reconstructions (tests/test_vqgan.py).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robust_jax.checks import check_images
from robust_jax.models import variables_io
from robust_jax.models.vqgan_blocks import Decoder, Encoder, conv1

_COMMON = dict(ch=128, num_res_blocks=2, resolution=256, dropout=0.0)
CONFIGS = {
    # latent-diffusion's vq-f8 (vqgan_openimages_f8_16384.ckpt): the VQGAN of DAT; 67,717,295 parameters.
    "openimages_f8_16384": dict(_COMMON, ch_mult=(1, 2, 2, 4), attn_resolutions=(32,), z_channels=4, embed_dim=4,
                                n_embed=16384),
    # taming's ImageNet f16 models: 72,141,699 and 76,073,859 parameters.
    "imagenet_f16_1024": dict(_COMMON, ch_mult=(1, 1, 2, 2, 4), attn_resolutions=(16,), z_channels=256,
                              embed_dim=256, n_embed=1024),
    "imagenet_f16_16384": dict(_COMMON, ch_mult=(1, 1, 2, 2, 4), attn_resolutions=(16,), z_channels=256,
                               embed_dim=256, n_embed=16384),
}


class VectorQuantizer(nn.Module):
    """Nearest-codebook-entry quantisation with a straight-through gradient (taming's VectorQuantizer2).

    legacy=True keeps taming's default loss, mean((sg[z_q] - z)^2) + beta * mean((z_q - sg[z])^2), where beta
    weighs the codebook term (an upstream slip kept for compatibility with trained models); legacy=False
    puts beta on the commitment term as in the VQ-VAE paper. Ties go to the first (lowest) index."""

    n_embed: int
    embed_dim: int
    beta: float = 0.25
    legacy: bool = True

    def setup(self):
        bound = 1.0 / self.n_embed  # taming initialises the codebook uniformly in [-1/n, 1/n]
        init = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)
        self.embedding = self.param("embedding", init, (self.n_embed, self.embed_dim))

    def indices(self, z):
        """Codes of latents z [..., embed_dim]: argmin of |z|^2 + |e|^2 - 2 z.e, as taming computes it."""
        e = self.embedding
        flat = z.reshape(-1, self.embed_dim)
        d = (jnp.sum(flat ** 2, axis=1, keepdims=True) + jnp.sum(e ** 2, axis=1)[None]
             - 2.0 * jnp.einsum("nd,kd->nk", flat, e))
        return jnp.argmin(d, axis=1).astype(jnp.int32).reshape(z.shape[:-1])

    def lookup(self, indices):
        return jnp.take(self.embedding, indices, axis=0)

    def __call__(self, z):
        """(z_q with straight-through gradient, loss, indices)."""
        idx = self.indices(z)
        z_q = self.lookup(idx)
        sg = jax.lax.stop_gradient
        commit, codebook = jnp.mean((sg(z_q) - z) ** 2), jnp.mean((z_q - sg(z)) ** 2)
        loss = commit + self.beta * codebook if self.legacy else self.beta * commit + codebook
        return z + sg(z_q - z), loss, idx


class VQModel(nn.Module):
    """decoder(post_quant_conv(quantize(quant_conv(encoder(2x - 1))))), on [0,1] images at the boundary."""

    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    attn_resolutions: Sequence[int]
    z_channels: int
    embed_dim: int
    n_embed: int
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    dropout: float = 0.0
    beta: float = 0.25
    legacy: bool = True

    def setup(self):
        arch = dict(ch=self.ch, ch_mult=tuple(self.ch_mult), num_res_blocks=self.num_res_blocks,
                    attn_resolutions=tuple(self.attn_resolutions), resolution=self.resolution, dropout=self.dropout)
        self.encoder = Encoder(z_channels=self.z_channels, **arch)
        self.decoder = Decoder(out_ch=self.out_ch, **arch)
        self.quant_conv = conv1(self.embed_dim)
        self.post_quant_conv = conv1(self.z_channels)
        self.quantize = VectorQuantizer(self.n_embed, self.embed_dim, self.beta, self.legacy)

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def _check(self, x):
        check_images(x, "x")
        f = self.downsampling
        if x.shape[1] % f or x.shape[2] % f or x.shape[-1] != self.in_channels:
            raise ValueError(f"VQGAN input must be [B,H,W,{self.in_channels}] with H and W multiples of {f}, "
                             f"got {x.shape}")

    def latents(self, x, *, train: bool = False):
        """Pre-quantisation latents (after quant_conv) of [0,1] images."""
        self._check(x)
        return self.quant_conv(self.encoder(2.0 * x - 1.0, train=train))

    def decode(self, z_q, *, train: bool = False):
        """Decoder output on the [-1,1] scale, not clipped."""
        return self.decoder(self.post_quant_conv(z_q), train=train)

    def __call__(self, x, *, train: bool = False) -> dict:
        """The training forward pass: {'dec', 'qloss', 'indices', 'z', 'z_q'} (see the module docstring)."""
        z = self.latents(x, train=train)
        z_q, qloss, idx = self.quantize(z)
        return {"dec": self.decode(z_q, train=train), "qloss": qloss, "indices": idx, "z": z, "z_q": z_q}

    def encode(self, x):
        """Codebook indices int32 [B, H/f, W/f] of [0,1] images."""
        return self.quantize.indices(self.latents(x))

    def decode_indices(self, indices):
        """[0,1] images from codebook indices."""
        return to_unit(self.decode(self.quantize.lookup(indices)))

    def reconstruct(self, x):
        """Q(x) = ((dec.clip(-1, 1)) + 1) / 2 of the full VQ pass of 2x - 1: DAT's quantiser."""
        z_q, _, _ = self.quantize(self.latents(x))
        return to_unit(self.decode(z_q))


def to_unit(dec):
    """Decoder output on [-1,1] -> images in [0,1], clipped as easyrobust's reconstruct_with_vqgan does."""
    return (jnp.clip(dec, -1.0, 1.0) + 1.0) / 2.0


def get(name: str, **overrides) -> VQModel:
    """The named architecture (CONFIGS), with fields overridden (e.g. in_channels=1 or a smaller ch)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown VQGAN {name!r}; known: {', '.join(sorted(CONFIGS))}")
    return VQModel(**{**CONFIGS[name], **overrides})


def decoder_output_kernel_path():
    """The params path of the decoder's last conv kernel (taming's adaptive GAN weight uses its gradients)."""
    return ("decoder", "conv_out", "kernel")


def quantize(model: VQModel, variables, x):
    """Q(x): the reconstruction of images x in [0,1], without gradient (DAT never differentiates the VQGAN).
    The variables are an argument, so under `jit` they stay arguments of the program, not constants."""
    return jax.lax.stop_gradient(model.apply(variables, x, method=VQModel.reconstruct))


def init_input(model: VQModel):
    """The smallest input that builds every variable: parameters do not depend on the spatial size."""
    size = 2 * model.downsampling
    return jnp.zeros((1, size, size, model.in_channels), jnp.float32)


def init_template(model: VQModel):
    """Shapes of the model's variables (no compute)."""
    return jax.eval_shape(model.init, jax.random.key(0), init_input(model))


def load(path: str, model: VQModel):
    """Variables of `model` from a msgpack file (converted or trained), strictly checked."""
    return variables_io.load_variables(path, init_template(model))
