"""models.bf16_dot_conv: bfloat16 'same' convolutions as one product (AMX CPUs), and their derivatives through
models.layers: lax's convolution of the same bfloat16 operands to bfloat16 rounding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from robust_jax.models import bf16_dot_conv, layers

BF16 = jnp.bfloat16


def _lax_same(x, w):
    kh, kw = w.shape[:2]
    return lax.conv_general_dilated(x, w, (1, 1), ((kh // 2, kh // 2), (kw // 2, kw // 2)),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _operands(x_shape, w_shape):
    x = jax.random.normal(jax.random.key(0), x_shape).astype(BF16)
    w = (jax.random.normal(jax.random.key(1), w_shape) / np.sqrt(np.prod(w_shape[:3]))).astype(BF16)
    return x, w


def _close_in_bf16(ours, ref):
    """Within bfloat16 rounding of the float32 result (8 bits of mantissa), plus float32 sums in another order."""
    ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
    np.testing.assert_allclose(ours, ref, rtol=2 ** -7, atol=2 ** -7 * np.abs(ref).max())


@pytest.mark.parametrize("x_shape,w_shape", [((2, 6, 5, 8), (3, 3, 8, 6)), ((2, 4, 4, 4), (1, 1, 4, 6)),
                                             ((1, 5, 7, 2), (5, 3, 2, 4)), ((3, 3, 2, 6), (1, 3, 6, 2))])
def test_product_is_the_convolution(x_shape, w_shape):
    x, w = _operands(x_shape, w_shape)
    ours = jax.jit(bf16_dot_conv.conv_same)(x, w)
    assert ours.dtype == BF16 and ours.shape == x_shape[:3] + w_shape[3:]
    _close_in_bf16(ours, _lax_same(x.astype(jnp.float32), w.astype(jnp.float32)))


def test_operands_it_takes():
    assert bf16_dot_conv.applies((2, 8, 8, 4), (3, 3, 4, 6), BF16, BF16)
    assert not bf16_dot_conv.applies((2, 8, 8, 4), (3, 3, 4, 6), jnp.float32, jnp.float32)
    assert not bf16_dot_conv.applies((2, 8, 8, 3), (3, 3, 3, 6), BF16, BF16)  # odd channels
    assert not bf16_dot_conv.applies((2, 8, 8, 4), (2, 2, 4, 6), BF16, BF16)  # even kernel
    assert bf16_dot_conv.applies((2, 16, 16, 4), (3, 3, 4, 6), BF16, BF16)
    assert not bf16_dot_conv.applies((2, 32, 32, 4), (3, 3, 4, 6), BF16, BF16)  # slower than float32 there


def test_cpu_flag(tmp_path):
    amx, plain = tmp_path / "amx", tmp_path / "plain"
    amx.write_text("processor : 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")
    plain.write_text("processor : 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert bf16_dot_conv.fast_on_this_cpu(str(amx))
    assert not bf16_dot_conv.fast_on_this_cpu(str(plain))
    assert not bf16_dot_conv.fast_on_this_cpu(str(tmp_path / "missing"))


def test_layers_route_bf16_convs_here_with_their_derivatives(monkeypatch):
    """With the CPU flag on, a bfloat16 'same' conv and its input gradient contain no convolution (the weight
    gradient stays one); values and both gradients match lax's bfloat16 convolution; off, lax's path."""
    x, w = _operands((2, 6, 6, 8), (3, 3, 8, 6))
    kw = dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    c = jax.random.normal(jax.random.key(2), (2, 6, 6, 6)).astype(BF16)
    loss = lambda conv: lambda x, w: jnp.sum((conv(x, w, **kw) * c).astype(jnp.float32))  # noqa: E731
    monkeypatch.setattr(bf16_dot_conv, "fast_on_this_cpu", lambda: True)
    ours = jax.jit(jax.grad(loss(layers.conv_general_dilated), argnums=(0, 1)))
    forward_and_input_grad = jax.jit(jax.grad(loss(layers.conv_general_dilated)))
    assert "convolution(" not in forward_and_input_grad.lower(x, w).compile().as_text()
    assert "convolution(" in ours.lower(x, w).compile().as_text()  # the weight gradient
    ref = jax.jit(jax.grad(loss(lax.conv_general_dilated), argnums=(0, 1)))(x, w)
    for a, b in zip(ours(x, w), ref):
        assert a.dtype == BF16
        _close_in_bf16(a, b)
    _close_in_bf16(jax.jit(lambda x, w: layers.conv_general_dilated(x, w, **kw))(x, w),
                   lax.conv_general_dilated(x, w, **kw))
    # second order (a gradient-norm penalty): reverse over reverse runs and matches lax's
    penalty = lambda conv: jax.grad(lambda x: jnp.sum(jax.grad(loss(conv))(x, w).astype(jnp.float32) ** 2))  # noqa
    _close_in_bf16(jax.jit(penalty(layers.conv_general_dilated))(x), jax.jit(penalty(lax.conv_general_dilated))(x))
    monkeypatch.setattr(bf16_dot_conv, "fast_on_this_cpu", lambda: False)
    assert "convolution(" in jax.jit(jax.grad(loss(layers.conv_general_dilated))).lower(x, w).compile().as_text()
