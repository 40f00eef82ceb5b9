"""Training objectives by name: `methods.get(config.method, model, num_classes)` -> object with `.loss`."""
from __future__ import annotations

from robust_jax.methods.dat import DAT
from robust_jax.methods.mart import MART
from robust_jax.methods.pgd_at import PGDAT
from robust_jax.methods.standard import Standard
from robust_jax.methods.trades import TRADES

REGISTRY = {"standard": Standard, "pgd_at": PGDAT, "trades": TRADES, "mart": MART, "dat": DAT}


def get(cfg, model, num_classes: int):
    if cfg.name not in REGISTRY:
        raise ValueError(f"unknown method {cfg.name!r}; known methods: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[cfg.name](model, cfg, num_classes)
