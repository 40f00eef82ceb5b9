"""Figures for reports and notebooks, written as PNG files.

Built on `matplotlib.figure.Figure` directly (not pyplot), so it works headless and never changes the
backend of the session it runs in (notebooks keep their inline plots).
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def accuracy_vs_eps(points, attack: str, path: str) -> str:
    """Robust accuracy against the perturbation budget; `points` [(eps, acc)] or {label: [(eps, acc)]}."""
    series = points if isinstance(points, dict) else {attack: points}
    fig = Figure(figsize=(4.5, 3.2), dpi=120)
    ax = fig.subplots()
    for label, pts in series.items():
        eps, acc = np.asarray(pts).T
        ax.plot(eps, 100 * acc, marker="o", label=label)
    ax.set_xlabel("eps")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def image_grid(rows, row_labels, path: str, titles=None) -> str:
    """Rows of [N,H,W,C] images in [0,1] (e.g. clean / adversarial / amplified perturbation)."""
    n = rows[0].shape[0]
    fig = Figure(figsize=(1.2 * n, 1.3 * len(rows)), dpi=120)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, imgs in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            img = np.clip(np.asarray(imgs[c]), 0, 1)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
            if titles is not None and r == 0:
                ax.set_title(titles[c], fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path
