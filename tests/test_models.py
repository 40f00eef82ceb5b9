"""Model contracts: BatchNorm semantics, dual BN, cut points, feature taps, registry errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import models
from robust_jax.models.layers import BatchNorm, DualBatchNorm


def _x(shape=(8, 4, 4, 3), seed=0):
    return jax.random.normal(jax.random.key(seed), shape) * 2.0 + 1.0


def test_batchnorm_train_matches_hand_computation():
    x = _x()
    bn = BatchNorm()
    v = bn.init(jax.random.key(0), x, train=False)
    y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
    mean = x.mean((0, 1, 2))
    var = x.var((0, 1, 2))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), atol=1e-5)
    n = 8 * 4 * 4
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * var * n / (n - 1), rtol=1e-5)  # unbiased
    y_eval = bn.apply({**v, **upd}, x, train=False)
    np.testing.assert_allclose(y_eval, (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var * n / (n - 1) + 1e-5),
                               rtol=1e-4, atol=1e-5)


def test_ghost_batchnorm_uses_per_group_statistics():
    x = _x()
    bn = BatchNorm(group_size=2)
    v = bn.init(jax.random.key(0), x, train=False)
    y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
    groups = x.reshape(4, 2, 4, 4, 3)
    for g in range(4):
        expected = (groups[g] - groups[g].mean((0, 1, 2))) / np.sqrt(groups[g].var((0, 1, 2)) + 1e-5)
        np.testing.assert_allclose(y[2 * g:2 * g + 2], expected, atol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * groups.mean((1, 2, 3)).mean(0), rtol=1e-5)
    with pytest.raises(ValueError, match="group_size"):
        BatchNorm(group_size=3).apply(v, x, train=True, mutable=["batch_stats"])


def test_dual_batchnorm_keeps_separate_statistics():
    x = _x()
    bn = DualBatchNorm()
    v = bn.init(jax.random.key(0), x, train=False)
    assert set(v["batch_stats"]) == {"clean", "adv"}
    _, upd = bn.apply(v, x, train=True, bn="adv", mutable=["batch_stats"])
    np.testing.assert_array_equal(upd["batch_stats"]["clean"]["mean"], v["batch_stats"]["clean"]["mean"])
    assert not np.allclose(upd["batch_stats"]["adv"]["mean"], v["batch_stats"]["adv"]["mean"])
    with pytest.raises(ValueError, match="bn must be"):
        bn.apply(v, x, train=False, bn="other")
    with pytest.raises(ValueError, match="dual_bn"):
        BatchNorm().apply(BatchNorm().init(jax.random.key(0), x, train=False), x, train=False, bn="adv")


@pytest.mark.parametrize("name,cuts", [("small_cnn", 3), ("resnet18", 5), ("preact_resnet18", 5)])
def test_front_back_compose_to_call_and_taps(name, cuts):
    model = models.get(name, num_classes=7, mean=(0.5,) * 3, std=(0.25,) * 3)
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
    v = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(0))
    full = model.apply(v, x, train=False)
    assert full.shape == (2, 7)
    for cut in range(cuts):
        f = model.apply(v, x, cut=cut, train=False, method=model.front)
        np.testing.assert_allclose(model.apply(v, f, cut=cut, train=False, method=model.back), full, atol=1e-5)
    _, state = model.apply(v, x, train=False, mutable=["intermediates"])
    taps = state["intermediates"]
    assert len(taps) == cuts and "stem_out" in taps
    with pytest.raises(ValueError, match="cut"):
        model.apply(v, x, cut=cuts, train=False, method=model.front)


def test_normalisation_inside_and_input_errors():
    model = models.get("small_cnn", num_classes=3, mean=(0.2,), std=(0.5,))
    x = jnp.full((2, 8, 8, 1), 0.2)
    v = model.init(jax.random.key(0), x, train=False)
    shifted = models.get("small_cnn", num_classes=3, mean=(0.0,), std=(0.5,))
    np.testing.assert_allclose(model.apply(v, x, train=False), shifted.apply(v, x - 0.2, train=False), atol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        model.apply(v, jnp.zeros((2, 8, 8, 3)), train=False)
    with pytest.raises(ValueError, match="rank 4"):
        model.apply(v, jnp.zeros((8, 8, 1)), train=False)
    with pytest.raises(ValueError, match="unknown model 'resnet17'.*resnet18"):
        models.get("resnet17")


def test_registry_param_counts_match_reference_architectures():
    """Parameter counts of the PyTorch originals (CIFAR ResNet-18: 11,173,962; torchvision ResNet-50 with
    1000 classes: 25,557,032; WRN-28-10: 36,479,194) pin the architectures down."""
    expected = {("resnet18", 10, 32): 11_173_962, ("resnet50", 1000, 64): 25_557_032, ("wrn28_10", 10, 32): 36_479_194}
    for (name, classes, size), count in expected.items():
        model = models.get(name, num_classes=classes)
        shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
        assert sum(np.prod(p.shape) for p in jax.tree.leaves(shapes["params"])) == count, name
