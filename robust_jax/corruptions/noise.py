"""Noise corruptions of ImageNet-C: gaussian, shot (Poisson), impulse (salt & pepper) and speckle noise.

Each corruption is a deterministic core fed with its random draws (the same draws the reference
`imagecorruptions` makes, so tests can replay the reference's numpy draws and compare exactly) and a
public `fn(key, image, severity)` that draws them with `jax.random`. Images are `[H, W, 3]` float32 in
[0,1]; the reference's uint8 -> /255 -> noise -> clip -> *255 -> uint8 pipeline becomes noise on [0,1]
images, with clipping and uint8 quantisation done by `corrupt`. Every pixel channel gets an independent
draw, as in the reference. Severity tables are the reference's.

Deliberate difference: the draws come from JAX's generators, not numpy's (same distributions, other
streams), so one image's noise differs from the reference's; the statistics agree (tests).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

GAUSSIAN_STD = (0.08, 0.12, 0.18, 0.26, 0.38)
SHOT_PHOTONS = (60, 25, 12, 5, 3)
IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
SPECKLE_STD = (0.15, 0.2, 0.35, 0.45, 0.6)


def gaussian_noise_core(x, noise):
    """x + noise, noise ~ N(0, std^2) per pixel channel (reference: `np.random.normal(scale=std)`)."""
    return x + noise


def shot_noise_core(counts, photons):
    """counts / photons, counts ~ Poisson(x * photons) per pixel channel (reference: `np.random.poisson`)."""
    return counts.astype(jnp.float32) / float(photons)


def impulse_noise_core(x, u_flip, u_salt, amount):
    """skimage `random_noise(x, 's&p', amount=amount)`: with u_flip, u_salt ~ U[0,1) per pixel channel
    (skimage draws `rng.random(shape)` twice, in this order), a channel flips when u_flip <= amount and
    becomes 1 (salt) when u_salt <= 0.5, else 0 (pepper; skimage's low clip is 0 for images >= 0)."""
    flipped = u_flip <= amount
    salted = u_salt <= 0.5
    return jnp.where(flipped, jnp.where(salted, 1.0, 0.0), x)


def speckle_noise_core(x, noise):
    """x + x * noise, noise ~ N(0, std^2) per pixel channel (reference: `np.random.normal(scale=std)`)."""
    return x + x * noise


def gaussian_noise(key, image, severity: int):
    std = GAUSSIAN_STD[severity - 1]
    return gaussian_noise_core(image, std * jax.random.normal(key, image.shape, jnp.float32))


def shot_noise(key, image, severity: int):
    photons = SHOT_PHOTONS[severity - 1]
    counts = jax.random.poisson(key, image * photons, image.shape)
    return shot_noise_core(counts, photons)


def impulse_noise(key, image, severity: int):
    k_flip, k_salt = jax.random.split(key)
    u_flip = jax.random.uniform(k_flip, image.shape, jnp.float32)
    u_salt = jax.random.uniform(k_salt, image.shape, jnp.float32)
    return impulse_noise_core(image, u_flip, u_salt, IMPULSE_AMOUNT[severity - 1])


def speckle_noise(key, image, severity: int):
    std = SPECKLE_STD[severity - 1]
    return speckle_noise_core(image, std * jax.random.normal(key, image.shape, jnp.float32))


CORRUPTIONS = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
}
