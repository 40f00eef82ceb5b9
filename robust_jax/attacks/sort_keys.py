"""Stable argsort of float32 rows through integer keys: the same permutation as `jnp.argsort(v, axis=1)`,
faster on XLA:CPU (FAB's projections sort every row of a batch at every step).

XLA:CPU sorts a single integer operand with `std::sort`'s built-in comparison, but sorts floats (whose
comparator JAX writes as a total order with -0.0 and NaN canonicalised) and key-value pairs (an argsort
sorts the keys with an iota) by calling a compiled comparator per comparison, several times slower
(`benchmarks/README.md`, "AutoAttack parity"). `argsort_rows` therefore uses only single-operand int32
sorts:

1. key: the float's bits as an int32, negatives' magnitude bits flipped, after mapping -0.0 to 0.0 and
   every NaN to one NaN (`lax`'s own canonicalisation), so that keys order exactly as JAX orders floats;
2. rank: the number of smaller keys in the row, by binary search in the row's sorted keys;
3. order: sorting rank * n + index (one int32 while n^2 < 2^31) orders by key, ties by index, which is
   the stable argsort; the index is the remainder.

Longer rows (n > 46340) fall back to `jnp.argsort`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_MAX_N = 46340  # n * n < 2^31


def float_sort_key(v):
    """int32 keys that order as JAX's float sort orders v (float32): -0.0 == 0.0, NaNs last."""
    v = jnp.where(v == 0, jnp.zeros_like(v), v)
    v = jnp.where(jnp.isnan(v), jnp.full_like(v, jnp.nan), v)
    k = lax.bitcast_convert_type(v.astype(jnp.float32), jnp.int32)
    return k ^ ((k >> 31) & jnp.int32(0x7FFFFFFF))


def _rank(sorted_row, row):
    """Number of entries of sorted_row smaller than each entry of row (binary search, static steps)."""
    return jnp.searchsorted(sorted_row, row, side="left", method="scan").astype(jnp.int32)


def argsort_rows(v):
    """Stable ascending argsort along axis 1 of a float [N, n] array; equal to `jnp.argsort(v, axis=1)`."""
    n = v.shape[1]
    if n > _MAX_N:
        return jnp.argsort(v, axis=1)
    key = float_sort_key(v)
    rank = jax.vmap(_rank)(lax.sort(key, dimension=1), key)
    packed = rank * n + lax.broadcasted_iota(jnp.int32, key.shape, 1)
    return lax.sort(packed, dimension=1) % n
