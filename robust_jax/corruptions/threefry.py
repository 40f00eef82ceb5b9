"""`jax.random`'s bits, uniform, normal and randint draws, the same values, several times faster on CPU.

JAX lowers its Threefry-2x32 hash on CPU as a rolled 5-step loop (to keep compiles short) that writes both
state words of every value to memory at each step. The corruptions draw one or two words per pixel
channel of a whole batch (2.4M values at 16 x 224 x 224 x 3), where that loop dominated their time. Here
the 20 rounds are unrolled into one elementwise pass: 4-8x faster than `jax.random` at that size.

`bits` (hence `uniform` and `normal`) computes the words as a stage of its own, also under `vmap`
(`stages.separately_batched`): fused with consumers such as the inverse error function of `normal` or the
alias-table lookups of shot noise, XLA:CPU stopped vectorising the loop and the hash ran ~8x slower.
`randint` stays fused into its consumer (glass blur's shuffle pointers: with its words apart glass blur
took 59-63 ms instead of 50-51 for 16 images at 224 px, severity 3).

Each function reproduces its `jax.random` counterpart bit for bit under JAX's default key implementation
(threefry2x32, partitionable counters; tests/test_corruptions_threefry.py checks every one, jitted and
vmapped). Other key implementations, non-partitionable Threefry, x64 mode and 2**32 values or more go
to `jax.random` itself, so a draw never changes with the path taken.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special

from robust_jax import stages


def _is_typed(key) -> bool:
    """A typed key (`jax.random.key`) rather than raw uint32 words (`jax.random.PRNGKey`)."""
    return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def _fast_path(key, size: int) -> bool:
    typed = key if _is_typed(key) else jax.random.wrap_key_data(key)
    return (str(jax.random.key_impl(typed)) == "threefry2x32" and jax.config.jax_threefry_partitionable
            and not jax.config.jax_enable_x64 and size < 2**32)


def _words(key):
    """The two uint32 words of a threefry key, typed (`jax.random.key`) or raw (`PRNGKey`)."""
    return jax.random.key_data(key) if _is_typed(key) else key


def _hash(words, size: int):
    """Threefry-2x32 (20 rounds) of the counters (0, i), i < size, under the key `words` (uint32 [2]),
    the two output words xor-ed: what `jax.random.bits(key, (size,), uint32)` returns with partitionable
    counters."""
    k0, k1 = words[0], words[1]
    schedule = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    x0 = jnp.zeros(size, jnp.uint32) + schedule[0]
    x1 = jnp.arange(size, dtype=jnp.uint32) + schedule[1]
    for i in range(5):
        for r in ((13, 15, 26, 6), (17, 29, 16, 24))[i % 2]:
            x0 = x0 + x1
            x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
        x0 = x0 + schedule[(i + 1) % 3]
        x1 = x1 + schedule[(i + 2) % 3] + np.uint32(i + 1)
    return x0 ^ x1


def bits(key, shape):
    """`jax.random.bits(key, shape, jnp.uint32)`."""
    shape = tuple(shape)
    size = math.prod(shape)
    if not _fast_path(key, size):
        return jax.random.bits(key, shape, jnp.uint32)
    return stages.separately_batched(lambda words: _hash(words, size))(_words(key)).reshape(shape)


def _to_uniform(word, minval, maxval):
    """`jax.random.uniform`'s float32 from a random word: 23 mantissa bits under the exponent of 1.0,
    minus 1, scaled to [minval, maxval), and kept >= minval."""
    floats = jax.lax.bitcast_convert_type((word >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32) - 1.0
    minval, maxval = jnp.float32(minval), jnp.float32(maxval)
    return jnp.maximum(minval, floats * (maxval - minval) + minval)


def uniform(key, shape, minval=0.0, maxval=1.0):
    """`jax.random.uniform(key, shape, jnp.float32, minval, maxval)` for scalar bounds."""
    return _to_uniform(bits(key, shape), minval, maxval)


_NORMAL_LOW = np.nextafter(np.float32(-1.0), np.float32(0.0))


def normal(key, shape):
    """`jax.random.normal(key, shape, jnp.float32)`: sqrt(2) erfinv(u), u uniform on (-1, 1)."""
    return np.float32(np.sqrt(2)) * special.erfinv(uniform(key, shape, _NORMAL_LOW, 1.0))


def randint(key, shape, low: int, high: int):
    """`jax.random.randint(key, shape, low, high)` (int32) for 0 < high - low < 2**31: JAX's reduction
    `low + lower_bits % span`, plus `(higher_bits % span) * multiplier` (JAX's uint32 form of
    2**32 % span) where that is not 0, the two words from a split of the key."""
    shape = tuple(shape)
    size = math.prod(shape)
    if not (_fast_path(key, size) and 0 < high - low < 2**31):
        return jax.random.randint(key, shape, low, high)
    span = np.uint32(high - low)
    higher_key, lower_key = jax.random.split(key)
    offset = _hash(_words(lower_key), size) % span
    multiplier = np.uint32((2**16 % int(span)) ** 2 % 2**32 % int(span))  # JAX's 2**32 % span, in uint32
    if multiplier:
        offset = ((_hash(_words(higher_key), size) % span) * multiplier + offset) % span
    return (low + offset.astype(jnp.int32)).reshape(shape)


def image_keys(key, n: int):
    """The per-image keys `corrupt` gives a batch of n images: `fold_in(key, i)` for i < n."""
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
