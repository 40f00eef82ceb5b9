"""Corruption metrics of Hendrycks & Dietterich (ICLR 2019): corruption error, mCE and relative mCE.

Inputs are top-1 errors in [0,1]: `errors[c][s]` for corruption c at severity s, and the clean error.

* CE_c (ImageNet-C): sum over severities of the model's error / the same sum of AlexNet's error. The
  reference code divides the mean error over severities by AlexNet's mean error (`ALEXNET_ERRORS`), which
  is the same ratio when all five severities are evaluated; with fewer severities we use AlexNet's mean
  too (the per-severity AlexNet errors are not published), and the report says which severities it used.
* mCE: mean of CE_c over the 15 benchmark corruptions (never the 4 extra ones).
* relative CE_c: (sum_s E_{c,s} - E_clean) / (sum_s E^AlexNet_{c,s} - E^AlexNet_clean), i.e. with means
  over severities: (mean_s E_{c,s} - E_clean) / (ALEXNET_ERRORS[c] - ALEXNET_CLEAN_ERROR); relative mCE
  is their mean over the 15.
* CIFAR-10-C (no AlexNet baseline): the plain mean corruption error / accuracy over corruptions and
  severities.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np

from robust_jax.corruptions import BENCHMARK

ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816,
    "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204,
    "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
"""AlexNet's top-1 error on ImageNet-C, averaged over the 5 severities (the constants of the ImageNet-C
evaluation code; spec/evaluation.md)."""

ALEXNET_CLEAN_ERROR = 0.43478
"""AlexNet's clean ImageNet top-1 error: 1 - 0.56522, the top-1 accuracy torchvision documents for its
pretrained `alexnet` (the model whose errors give `ALEXNET_ERRORS`); Hendrycks & Dietterich's Table 1
rounds it to 43.5%."""


def _mean_error(errors_c: Mapping) -> float:
    return float(np.mean([float(v) for v in errors_c.values()]))


def corruption_errors(errors: Mapping[str, Mapping]) -> Dict[str, float]:
    """{corruption: mean error over its severities}."""
    return {c: _mean_error(e) for c, e in errors.items()}


def ce(errors: Mapping[str, Mapping]) -> Dict[str, float]:
    """{benchmark corruption: CE_c} for the benchmark corruptions present (AlexNet-normalised)."""
    return {c: _mean_error(e) / ALEXNET_ERRORS[c] for c, e in errors.items() if c in ALEXNET_ERRORS}


def relative_ce(errors: Mapping[str, Mapping], clean_error: float) -> Dict[str, float]:
    """{benchmark corruption: relative CE_c} (the degradation from clean, AlexNet-normalised)."""
    return {c: (_mean_error(e) - clean_error) / (ALEXNET_ERRORS[c] - ALEXNET_CLEAN_ERROR)
            for c, e in errors.items() if c in ALEXNET_ERRORS}


def _complete(errors) -> bool:
    return all(c in errors for c in BENCHMARK)


def summarise(errors: Mapping[str, Mapping], clean_error: Optional[float], *, alexnet: bool) -> dict:
    """All corruption metrics of one model. `errors[c][s]` (s an int or its string); `alexnet`: also the
    ImageNet-C metrics normalised by AlexNet (CE, mCE, relative mCE), meaningful for ImageNet-1k models
    only. mCE / relative mCE need all 15 benchmark corruptions and are None otherwise; relative CE needs
    the clean error (None when it was not measured)."""
    per_c = corruption_errors(errors)
    bench = [c for c in errors if c in BENCHMARK]
    out = {
        "clean_error": None if clean_error is None else float(clean_error),
        "corruption_error": per_c,
        "mean_corruption_error": float(np.mean(list(per_c.values()))) if per_c else None,
        "mean_corruption_error_benchmark": float(np.mean([per_c[c] for c in bench])) if bench else None,
    }
    out["mean_corruption_accuracy"] = None if out["mean_corruption_error"] is None else 1 - out["mean_corruption_error"]
    if alexnet:
        ce_c = ce(errors)
        rel_c = relative_ce(errors, clean_error) if clean_error is not None else {c: None for c in ce_c}
        out["ce"], out["relative_ce"] = ce_c, rel_c
        out["mce"] = float(np.mean([ce_c[c] for c in BENCHMARK])) if _complete(errors) else None
        out["relative_mce"] = (float(np.mean([rel_c[c] for c in BENCHMARK]))
                               if _complete(errors) and clean_error is not None else None)
    return out
