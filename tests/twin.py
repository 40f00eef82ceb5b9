"""A tiny classifier defined twice, in Flax and in PyTorch, with the same weights: the fixture that attack
parity tests (APGD, FAB, Square, AutoAttack against `pyautoattack`) run both implementations on.

`trained_twin()` trains the Flax net on the embedded digits (16x16, 1 channel tiled to 3, 10 classes)
for a few hundred Adam steps (about two seconds), so attacks face a model with real decision
boundaries, and copies the weights into the PyTorch net. `digits_test_points(n)` are held-out digits in
[0,1] NHWC. Both nets compute in float32; logits agree to ~1e-5.
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from robust_jax.models import layers


class FlaxTwin(nn.Module):
    """conv3x3(16) -> relu -> conv3x3(32, stride 2) -> relu -> global mean -> dense(num_classes).
    Convs use padding 1 (torch semantics: `((1, 1), (1, 1))`) and `conv_general_dilated`: the library's
    conv by default, as every robust_jax model (same values; input gradients inside attack loops on
    XLA:CPU's fast path); `jax.lax.conv_general_dilated` is what flax's plain `nn.Conv` uses."""

    num_classes: int = 10
    conv_general_dilated: Callable = layers.conv_general_dilated

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding=((1, 1), (1, 1)),
                                 conv_general_dilated=self.conv_general_dilated)
        x = nn.relu(conv(16, name="conv1")(x))
        x = nn.relu(conv(32, strides=(2, 2), name="conv2")(x))
        return nn.Dense(self.num_classes, name="fc")(jnp.mean(x, axis=(1, 2)))


def torch_twin(params, num_classes: int = 10):
    """The PyTorch net with the Flax `params`; takes NCHW [0,1] images, returns logits."""
    import torch
    import torch.nn as tnn

    class TorchTwin(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 16, 3, padding=1)
            self.conv2 = tnn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.fc = tnn.Linear(32, num_classes)

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            x = torch.relu(self.conv2(x))
            return self.fc(x.mean(dim=(2, 3)))

    net = TorchTwin()
    with torch.no_grad():
        for name in ("conv1", "conv2"):
            getattr(net, name).weight.copy_(torch.from_numpy(np.asarray(params[name]["kernel"]).transpose(3, 2, 0, 1).copy()))
            getattr(net, name).bias.copy_(torch.from_numpy(np.array(params[name]["bias"])))
        net.fc.weight.copy_(torch.from_numpy(np.asarray(params["fc"]["kernel"]).T.copy()))
        net.fc.bias.copy_(torch.from_numpy(np.array(params["fc"]["bias"])))
    return net.eval()


@functools.lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0  # 8x8 in [0,1]
    x = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)  # 16x16, nearest
    x = np.repeat(x[..., None], 3, axis=-1)  # 3 channels, as the attacks' references expect
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], d.target[order].astype(np.int32)
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def digits_test_points(n: int):
    """n held-out digits: (x [n,16,16,3] float32 in [0,1], y [n] int32)."""
    (_, _), (x, y) = _digits()
    return x[:n], y[:n]


@functools.lru_cache(maxsize=2)
def trained_twin(steps: int = 300, seed: int = 0):
    """(apply_fn, params): `apply_fn(params, x_nhwc) -> logits`; trained on the digits train part."""
    (x, y), _ = _digits()
    model = FlaxTwin()
    params = model.init(jax.random.key(seed), x[:1])["params"]
    opt = optax.adam(1e-2)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb):
        def loss(p):
            logits = model.apply({"params": p}, xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(x), 128)
        params, opt_state = step(params, opt_state, x[idx], y[idx])
    apply_fn = lambda p, xb: model.apply({"params": p}, xb)
    return apply_fn, params
