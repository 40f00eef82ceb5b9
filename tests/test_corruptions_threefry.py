"""`robust_jax.corruptions.threefry`: the same draws as `jax.random`, bit for bit, on every path the
corruptions take (jitted, raw and typed keys, vmapped once and twice as `corrupt` calls them), the
fallback for other generators, and the separate stage that keeps XLA:CPU from fusing the hash into its
consumers (the reason the module is faster)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.corruptions import threefry

_DRAWS = {
    "bits": (lambda k, s: threefry.bits(k, s), lambda k, s: jax.random.bits(k, s, jnp.uint32)),
    "uniform": (lambda k, s: threefry.uniform(k, s, -0.3, 2.5),
                lambda k, s: jax.random.uniform(k, s, jnp.float32, -0.3, 2.5)),
    "normal": (lambda k, s: threefry.normal(k, s), lambda k, s: jax.random.normal(k, s, jnp.float32)),
}


@pytest.mark.parametrize("name", sorted(_DRAWS))
def test_draws_equal_jax_random(name):
    ours, theirs = _DRAWS[name]
    key = jax.random.key(11)
    shape = (3, 5, 7)
    np.testing.assert_array_equal(jax.jit(lambda k: ours(k, shape))(key), theirs(key, shape))
    raw = jax.random.PRNGKey(4)
    np.testing.assert_array_equal(ours(raw, (13,)), theirs(raw, (13,)))
    keys = jax.random.split(key, 6)
    once = jax.jit(jax.vmap(lambda k: ours(k, (4, 3))))(keys)
    np.testing.assert_array_equal(once, jax.vmap(lambda k: theirs(k, (4, 3)))(keys))
    twice = jax.vmap(jax.vmap(lambda k: ours(k, (4, 3))))(keys.reshape(2, 3))
    np.testing.assert_array_equal(twice.reshape(once.shape), once)


@pytest.mark.parametrize("low,high", [(-1, 1), (-3, 3), (0, 6), (-50000, 50007), (0, 2**31 - 1)])
def test_randint_equals_jax_random(low, high):
    """Glass blur's offsets: spans with JAX's 2**32 % span multiplier 0 and not."""
    key = jax.random.key(7)
    np.testing.assert_array_equal(jax.jit(lambda k: threefry.randint(k, (3, 5, 7), low, high))(key),
                                  jax.random.randint(key, (3, 5, 7), low, high))
    raw = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(threefry.randint(raw, (11,), low, high), jax.random.randint(raw, (11,), low, high))
    keys = jax.random.split(key, 4)
    np.testing.assert_array_equal(jax.vmap(lambda k: threefry.randint(k, (9,), low, high))(keys),
                                  jax.vmap(lambda k: jax.random.randint(k, (9,), low, high))(keys))


def test_other_generators_fall_back_to_jax_random():
    key = jax.random.key(5, impl="rbg")
    for ours, theirs in _DRAWS.values():
        np.testing.assert_array_equal(ours(key, (6, 2)), theirs(key, (6, 2)))
    np.testing.assert_array_equal(threefry.randint(key, (6,), -2, 9), jax.random.randint(key, (6,), -2, 9))


def test_words_are_a_stage_of_their_own_under_vmap():
    """The hash (xor) runs in one conditional over the whole batch, never in a computation with the
    inverse error function's log1p; plain vmap of `stages.separately` would have selected between two
    inlined copies of the hash, fused with the erfinv (XLA:CPU then stops vectorising it)."""
    keys = jax.random.split(jax.random.key(0), 4)
    hlo = jax.jit(jax.vmap(lambda k: threefry.normal(k, (8, 8)))).lower(keys).compile().as_text()
    assert hlo.count(" conditional(") == 1
    computations = hlo.split("\n\n")
    assert any(" xor(" in c for c in computations)
    assert any("log-plus-one(" in c for c in computations)
    assert not any(" xor(" in c and "log-plus-one(" in c for c in computations)
