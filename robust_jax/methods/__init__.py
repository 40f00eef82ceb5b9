"""Training objectives by name: `methods.get(config.method, model, num_classes)` -> object with `.loss`."""
from __future__ import annotations

from robust_jax.methods.advbn import AdvBN
from robust_jax.methods.dat import DAT
from robust_jax.methods.mart import MART
from robust_jax.methods.pgd_at import PGDAT
from robust_jax.methods.standard import Standard
from robust_jax.methods.trades import TRADES

REGISTRY = {"standard": Standard, "pgd_at": PGDAT, "trades": TRADES, "mart": MART, "dat": DAT, "advbn": AdvBN}


def _cls(cfg):
    if cfg.name not in REGISTRY:
        raise ValueError(f"unknown method {cfg.name!r}; known methods: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[cfg.name]


def trainable_mask(cfg, model, variables, image_shape):
    """None (train every parameter) or the bool tree of parameters method `cfg.name` trains."""
    return _cls(cfg).trainable(cfg, model, variables, image_shape)


def get(cfg, model, num_classes: int):
    return _cls(cfg)(model, cfg, num_classes)
