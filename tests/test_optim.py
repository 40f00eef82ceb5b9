"""Learning-rate schedules: warm-up start and cosine floor (the DeiT/timm recipe's warmup_lr and min_lr)."""
import numpy as np
import pytest

from configs import common
from robust_jax import optim


def _cfg(**kw):
    c = common.base().optim
    c.update(dict(dict(schedule="cosine", lr=1e-3), **kw))
    return c


def test_cosine_warmup_starts_at_warmup_init_lr_and_ends_at_min_lr():
    sched = optim.make_schedule(_cfg(warmup_epochs=5, warmup_init_lr=1e-6, min_lr=1e-6),
                                steps_per_epoch=10, total_steps=300)
    assert np.isclose(float(sched(0)), 1e-6)
    assert np.isclose(float(sched(25)), 1e-6 + 0.5 * (1e-3 - 1e-6), rtol=1e-5)
    assert np.isclose(float(sched(50)), 1e-3)
    assert np.isclose(float(sched(300)), 1e-6, rtol=1e-4)
    mid = 50 + 125  # half-way through the cosine: the mean of lr and min_lr
    assert np.isclose(float(sched(mid)), (1e-3 + 1e-6) / 2, rtol=1e-4)


def test_defaults_keep_warmup_from_zero_and_cosine_to_zero():
    sched = optim.make_schedule(_cfg(warmup_epochs=1), steps_per_epoch=10, total_steps=100)
    assert float(sched(0)) == 0.0 and np.isclose(float(sched(100)), 0.0, atol=1e-12)


def test_min_lr_above_lr_is_an_error():
    with pytest.raises(ValueError, match="min_lr"):
        optim.make_schedule(_cfg(min_lr=1e-2), steps_per_epoch=10, total_steps=100)


def test_weight_decay_on_kernels_skips_biases_norms_and_vit_embeddings():
    params = {"conv": {"kernel": np.ones((3, 3, 2, 4)), "bias": np.ones(4)}, "norm": {"scale": np.ones(4)},
              "pos_embed": np.ones((1, 5, 4)), "cls_token": np.ones((1, 1, 4)), "head": {"kernel": np.ones((4, 2))}}
    mask = optim._decay_mask(params, "kernels")
    assert mask == {"conv": {"kernel": True, "bias": False}, "norm": {"scale": False}, "pos_embed": False,
                    "cls_token": False, "head": {"kernel": True}}
    with pytest.raises(ValueError, match="weight_decay_on"):
        optim._decay_mask(params, "some")
