"""taming's PatchGAN discriminator (NLayerDiscriminator, from pix2pix) in Flax: a map of real/fake logits.

conv4x4/2 -> LeakyReLU(0.2); (layers - 1) x [conv4x4/2 without bias -> BatchNorm -> LeakyReLU]; conv4x4/1
without bias -> BatchNorm -> LeakyReLU; conv4x4/1 -> 1 channel; padding 1 everywhere; widths
ndf * min(2^n, 8). Weights N(0, 0.02), BatchNorm scale N(1, 0.02), as taming's `weights_init`. Inputs on the
[-1,1] scale (what the VQGAN decodes to). Each stride-2 layer halves the image and the two stride-1 layers
take 1 pixel each: 16x16 inputs allow at most 2 layers, 32x32 at most 3.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

_PAD = ((1, 1), (1, 1))


def _conv(features, stride, bias, name):
    return nn.Conv(features, (4, 4), strides=(stride, stride), padding=_PAD, use_bias=bias,
                   kernel_init=nn.initializers.normal(0.02), name=name)


def _bn(name):
    scale_init = lambda key, shape, dtype=jnp.float32: 1.0 + nn.initializers.normal(0.02)(key, shape, dtype)
    return nn.BatchNorm(momentum=0.9, epsilon=1e-5, scale_init=scale_init, name=name)


class PatchDiscriminator(nn.Module):
    channels: int = 64  # taming's ndf
    layers: int = 3     # taming's n_layers

    @nn.compact
    def __call__(self, x, *, train: bool):
        if min(x.shape[1:3]) < 2 ** self.layers * 2:
            raise ValueError(f"a {self.layers}-layer PatchGAN needs images of at least {2 ** self.layers * 2} "
                             f"pixels a side, got {x.shape[1:3]}: lower vqgan.disc_layers")
        h = nn.leaky_relu(_conv(self.channels, 2, True, "main_0")(x), 0.2)
        index, mult = 2, 1
        for n in range(1, self.layers + 1):
            mult = min(2 ** n, 8)
            stride = 2 if n < self.layers else 1
            h = _conv(self.channels * mult, stride, False, f"main_{index}")(h)
            h = nn.leaky_relu(_bn(f"main_{index + 1}")(h, use_running_average=not train), 0.2)
            index += 3
        return _conv(1, 1, True, f"main_{index}")(h)
