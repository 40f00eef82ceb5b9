"""Structure (not timing) of the compiled PGD loop, guarding the XLA:CPU speed fix of `layers.conv_general_dilated`.

The fix (benchmarks/README.md): JAX's input gradient of a conv is a conv on the reversed kernel with its feature
axes swapped (`dim_labels=b01f_01oi->b01f`); XLA:CPU canonicalises that layout only in the entry computation, so
inside the attack's `while` body it ran on the slow generic emitter. Our conv's JVP makes the input gradient use
the forward's kernel layout, with the kernel flip+swap behind an optimization barrier that XLA hoists out of the
loop. These tests read the optimised HLO: every convolution canonical, no kernel reversal left in the loop body,
and the program and its buffers the same size whatever the number of steps. The first tests check the conv gives
exactly the values and derivatives of `lax.conv_general_dilated`.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from benchmarks import hlo as hlo_lib
from robust_jax import models
from robust_jax.attacks import pgd
from robust_jax.models import layers

CANONICAL = "b01f_01io->b01f"

CONV_CASES = [  # strides, padding, lhs_dilation, rhs_dilation, kernel size
    ((1, 1), ((1, 1), (1, 1)), None, None, 3),
    ((2, 2), ((1, 1), (1, 1)), None, None, 3),
    ((2, 2), ((0, 0), (0, 0)), None, None, 1),
    ((2, 2), ((3, 3), (3, 3)), None, None, 7),
    ((1, 2), ((0, 2), (1, 0)), (1, 1), (2, 1), 3),
]


def _conv_pair(case, dn=("NHWC", "HWIO", "NHWC")):
    strides, padding, lhs_dil, rhs_dil, _ = case
    kw = dict(window_strides=strides, padding=padding, lhs_dilation=lhs_dil, rhs_dilation=rhs_dil,
              dimension_numbers=dn)
    return (lambda x, w: lax.conv_general_dilated(x, w, **kw)), (lambda x, w: layers.conv_general_dilated(x, w, **kw))


def _inputs(k, dn="NHWC"):
    x = jax.random.normal(jax.random.key(0), (2, 11, 10, 3))
    w = jax.random.normal(jax.random.key(1), (k, k, 3, 5))
    if dn == "NCHW":
        x, w = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
    return x, w


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_values_and_gradients_identical_to_lax(case):
    ref, ours = _conv_pair(case)
    x, w = _inputs(case[-1])
    loss = lambda f: (lambda x, w: jnp.sum(jnp.sin(f(x, w))))
    np.testing.assert_array_equal(ours(x, w), ref(x, w))
    for a, b in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(ref), (0, 1))(x, w)):
        np.testing.assert_array_equal(a, b)
    if case not in (CONV_CASES[0], CONV_CASES[-1]):  # higher orders: the plain and the most general case
        return
    # forward mode, second order (Hessian) and double backprop through the input gradient
    np.testing.assert_allclose(jax.jvp(loss(ours), (x, w), (x, w))[1], jax.jvp(loss(ref), (x, w), (x, w))[1],
                               rtol=1e-6)
    hess = lambda f: jax.hessian(loss(f), (0, 1))(x[:1, :5, :5], w)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), hess(ours), hess(ref))
    gnorm = lambda f: jax.grad(lambda w: jnp.sum(jax.grad(loss(f))(x, w) ** 2))(w)
    np.testing.assert_allclose(gnorm(ours), gnorm(ref), rtol=1e-5, atol=1e-5)


def test_conv_other_layouts_and_vmap():
    ref, ours = _conv_pair(CONV_CASES[1], dn=("NCHW", "OIHW", "NCHW"))
    x, w = _inputs(3, "NCHW")
    loss = lambda f: (lambda x, w: jnp.sum(f(x, w) ** 2))
    for a, b in zip(jax.grad(loss(ours), (0, 1))(x, w), jax.grad(loss(ref), (0, 1))(x, w)):
        np.testing.assert_array_equal(a, b)
    per_example = lambda f: jax.vmap(jax.grad(lambda xi, w: loss(f)(xi[None], w)), (0, None))(x, w)
    np.testing.assert_allclose(per_example(ours), per_example(ref), rtol=1e-6, atol=1e-6)


def test_model_gradients_identical_to_plain_flax_conv(monkeypatch):
    """PreAct-ResNet (narrow) in train mode: gradients w.r.t. input and parameters as with flax's own conv
    (the small-map im2col forward off: its rounding is tested apart)."""
    monkeypatch.setattr(layers, "SMALL_MAP_PIXELS", 0)
    model = models.get("preact_resnet18", num_classes=10, width=8)
    x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
    y = jnp.arange(4)
    v = model.init(jax.random.key(1), x, train=False)

    def grads():
        def loss(params, x):
            logits, _ = model.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
            return jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(4), y])
        return jax.jit(jax.grad(loss, (0, 1)))(v["params"], x)

    ours = grads()
    monkeypatch.setattr(layers, "conv_general_dilated", None)  # nn.Conv falls back to lax.conv_general_dilated
    ref = grads()
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ours, ref)


@pytest.mark.parametrize("size,k", [(4, 3), (3, 3), (2, 3), (1, 3), (4, 1), (2, 5)])
def test_small_map_forward_is_an_im2col_product_of_the_same_convolution(size, k):
    """'same' stride-1 convs on <= 4x4 maps: the forward is a patches x kernel product (lax's values to
    float32 rounding) and the derivatives are lax's own (bit for bit for a loss linear in the output)."""
    p = k // 2
    kw = dict(window_strides=(1, 1), padding=((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x = jax.random.normal(jax.random.key(0), (3, size, size, 6))
    w = jax.random.normal(jax.random.key(1), (k, k, 6, 5))
    ours = jax.jit(lambda x, w: layers.conv_general_dilated(x, w, **kw))
    ref = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, **kw))
    np.testing.assert_allclose(ours(x, w), ref(x, w), rtol=1e-5, atol=1e-5)
    assert "convolution(" not in ours.lower(x, w).compile().as_text()
    c = jax.random.normal(jax.random.key(2), ref(x, w).shape)
    linear = lambda f: jax.grad(lambda x, w: jnp.sum(f(x, w) * c), (0, 1))(x, w)
    for a, b in zip(linear(ours), linear(ref)):
        np.testing.assert_array_equal(a, b)
    larger = jax.random.normal(jax.random.key(3), (3, 5, 5, 6))  # 25 pixels: the convolution itself
    np.testing.assert_array_equal(ours(larger, w), ref(larger, w))


def test_weight_gradients_read_an_input_swapped_on_its_own():
    """Every conv's weight gradient reads its input with batch and feature swapped by a conditional of its own
    (`stages.separately`), not by a transpose XLA:CPU fuses with the BatchNorm/ReLU/add that produced it."""
    model = models.get("preact_resnet18", num_classes=10, width=8)
    x = jnp.full((2, 32, 32, 3), 0.5)
    v = model.init(jax.random.key(0), x, train=False)

    def loss(params, x):
        logits, _ = model.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(logits)

    hlo = jax.jit(jax.grad(loss)).lower(v["params"], x).compile().as_text()
    kernels = [leaf for leaf in jax.tree.leaves(v["params"]) if leaf.ndim == 4]
    assert len(kernels) == 20
    # one swap per distinct conv input: the three 1x1 shortcuts read the same input as their block's conv1
    assert hlo.count(" conditional(") == len(kernels) - 3


# --- optimised HLO of the attack loop ------------------------------------------------------------------------
def _attack_loop(hlo: str) -> list:
    """Instruction lines of the while body (with everything it calls) that holds the attack's convolutions."""
    loops = hlo_lib.loops_with(hlo, "convolution")
    assert len(loops) == 1, f"expected one while loop with convolutions, found {len(loops)}"
    return loops[0]


def _dim_labels(lines):
    return [m for line in lines if " convolution(" in line for m in re.findall(r"dim_labels=([^,\s]+)", line)]


def _compiled_attack(steps=3, train=True, early_stop=False):
    model = models.get("preact_resnet18", num_classes=10, width=8)
    # 32x32 as CIFAR: at 16x16 the last stage is 2x2, smaller than the kernel, and XLA then swaps the operands
    # of those convolutions (`01fb_o01i->f01b`, a different rewrite, with or without the fix)
    x = jnp.full((2, 32, 32, 3), 0.5)
    y = jnp.zeros(2, jnp.int32)
    v = model.init(jax.random.key(0), x, train=False)

    def attack(v, x, y, key):
        if train:
            logits_fn = lambda xa: model.apply(v, xa, train=True, mutable=["batch_stats"])[0]
        else:
            logits_fn = lambda xa: model.apply(v, xa, train=False)
        return pgd(logits_fn, x, y, key, eps=8 / 255, step_size=2 / 255, steps=steps, early_stop=early_stop)

    return jax.jit(attack).lower(v, x, y, jax.random.key(1)).compile()


@pytest.mark.parametrize("train,early_stop", [(True, False), (False, False), (False, True)])
def test_attack_loop_convolutions_are_canonical_and_kernel_prep_hoisted(train, early_stop):
    hlo = _compiled_attack(train=train, early_stop=early_stop).as_text()
    loop = _attack_loop(hlo)
    labels = _dim_labels(loop)
    assert len(labels) >= 2 * 17 - 1, labels  # forward and input-gradient convs of all 17 layers but the stem's
    assert set(labels) == {CANONICAL}, sorted(set(labels))
    assert set(_dim_labels(hlo.splitlines())) == {CANONICAL}
    # the kernels' flip + feature swap is computed once, outside the loop (hoisted past the barrier)
    assert not [line for line in loop if " reverse(" in line]


def test_the_structural_check_sees_the_slow_layout_without_the_fix(monkeypatch):
    """Sensitivity of the test above: with flax's plain conv the loop holds reversed `01oi` kernels."""
    monkeypatch.setattr(layers, "conv_general_dilated", None)
    loop = _attack_loop(_compiled_attack().as_text())
    assert any(label.endswith("01oi->b01f") for label in _dim_labels(loop))
    assert any(" reverse(" in line for line in loop)


def test_compiled_program_and_buffers_do_not_grow_with_steps():
    small, large = _compiled_attack(steps=2), _compiled_attack(steps=40)
    hlo_small, hlo_large = small.as_text(), large.as_text()
    assert hlo_small.count("\n") == hlo_large.count("\n")
    assert hlo_small.count(" convolution(") == hlo_large.count(" convolution(")
    mem_small, mem_large = small.memory_analysis(), large.memory_analysis()
    if mem_small is not None and mem_large is not None:
        assert mem_small.temp_size_in_bytes == mem_large.temp_size_in_bytes
