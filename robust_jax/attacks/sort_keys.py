"""Stable argsort of float32 rows through integer keys: the same permutation as `jnp.argsort(v, axis=1)`,
faster on XLA:CPU (FAB's projections sort every row of a batch at every step).

XLA:CPU sorts a single integer operand with `std::sort`'s built-in comparison, but sorts floats (whose
comparator JAX writes as a total order with -0.0 and NaN canonicalised) and key-value pairs (an argsort
sorts the keys with an iota) by calling a compiled comparator per comparison, several times slower
(`benchmarks/README.md`, "AutoAttack parity"). `argsort_rows` therefore uses only single-operand int32
sorts, as a two-pass LSD radix sort of 32-bit keys:

1. key: the float's bits as an int32, negatives' magnitude bits flipped, after mapping -0.0 to 0.0 and
   every NaN to one NaN (`lax`'s own canonicalisation), so that keys order exactly as JAX orders floats;
   read as unsigned (sign bit flipped), split into a low and a high digit;
2. sort low digit * n + index: the indices ordered by the low digit, ties by index;
3. sort high digit (of the index at each position) * n + position: ordered by the high digit, ties kept in
   the previous order, which is the stable argsort of the whole key. Both packed values stay below 2^31
   while each digit has at most 31 - ceil(log2 n) bits and the two cover 32, i.e. for n <= 2^15.

Longer rows fall back to `jnp.argsort`.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

_MAX_N = 2 ** 15  # two digits of 31 - ceil(log2 n) >= 16 bits cover the 32-bit key


def float_sort_key(v):
    """int32 keys that order as JAX's float sort orders v (float32): -0.0 == 0.0, NaNs last."""
    v = jnp.where(v == 0, jnp.zeros_like(v), v)
    v = jnp.where(jnp.isnan(v), jnp.full_like(v, jnp.nan), v)
    k = lax.bitcast_convert_type(v.astype(jnp.float32), jnp.int32)
    return k ^ ((k >> 31) & jnp.int32(0x7FFFFFFF))


def argsort_rows(v):
    """Stable ascending argsort along axis 1 of a float [N, n] array; equal to `jnp.argsort(v, axis=1)`."""
    n = v.shape[1]
    if n > _MAX_N:
        return jnp.argsort(v, axis=1)
    low_bits = 32 - (31 - max(1, (n - 1).bit_length()))  # the high digit gets the other (more) bits
    unsigned = float_sort_key(v) ^ jnp.int32(-2 ** 31)  # unsigned order of the bit pattern = the key order
    low = unsigned & jnp.int32((1 << low_bits) - 1)
    high = lax.shift_right_logical(unsigned, jnp.int32(low_bits))
    position = lax.broadcasted_iota(jnp.int32, v.shape, 1)
    by_low = lax.sort(low * n + position, dimension=1) % n
    order = lax.sort(jnp.take_along_axis(high, by_low, axis=1) * n + position, dimension=1) % n
    return jnp.take_along_axis(by_low, order, axis=1)
