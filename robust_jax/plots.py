"""Figures for reports and notebooks, written as PNG files.

Built on `matplotlib.figure.Figure` directly (not pyplot), so it works headless and never changes the
backend of the session it runs in (notebooks keep their inline plots). Every PNG is kept under
`MAX_BYTES` (README/report pictures): if the plain PNG is larger it is re-encoded with a 256-colour
palette, then at lower resolution.
"""
from __future__ import annotations

import io
import os

import numpy as np
from matplotlib.figure import Figure

MAX_BYTES = 150_000


def save(fig: Figure, path: str, max_bytes: int = MAX_BYTES) -> str:
    """Saves `fig` as a PNG of at most `max_bytes` (palette, then lower dpi if needed); returns `path`."""
    from PIL import Image

    dpi = fig.dpi
    data = b""
    for _ in range(6):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        data = buf.getvalue()
        if len(data) <= max_bytes:
            break
        img = Image.open(io.BytesIO(data)).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        buf = io.BytesIO()
        img.save(buf, format="png", optimize=True)
        data = buf.getvalue()
        if len(data) <= max_bytes:
            break
        dpi *= 0.75
    if len(data) > max_bytes:
        raise ValueError(f"{path}: could not fit the figure in {max_bytes} bytes")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


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
    return save(fig, path)


def grouped_bars(rows: dict, labels, path: str, ylabel: str = "accuracy (%)") -> str:
    """One group of bars per row {row: {label: fraction}}, one bar per label (missing ones left out)."""
    fig = Figure(figsize=(max(4.5, 0.6 * len(rows) * max(1, len(labels)) / 2 + 1.5), 3.4), dpi=120)
    ax = fig.subplots()
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = [100 * rows[k].get(label, np.nan) for k in rows]
        ax.bar(np.arange(len(rows)) + (i - (len(labels) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(np.arange(len(rows)), list(rows), rotation=30 if len(rows) > 4 else 0, ha="right"
                  if len(rows) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def corruption_heatmap(errors, names, severities, path: str, title: str = "corruption error (%)") -> str:
    """Heat-map of top-1 error (%), corruptions (rows) x severities (columns), each cell annotated.
    `errors`: array [len(names), len(severities)] of errors in [0,1]."""
    err = 100 * np.asarray(errors, np.float64)
    if err.shape != (len(names), len(severities)):
        raise ValueError(f"errors has shape {err.shape}, expected {(len(names), len(severities))}")
    fig = Figure(figsize=(1.6 + 0.55 * len(severities) + 1.0, 0.8 + 0.28 * len(names)), dpi=110)
    ax = fig.subplots()
    im = ax.imshow(err, cmap="magma_r", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(severities)), [str(s) for s in severities], fontsize=8)
    ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=8)
    ax.set_xlabel("severity", fontsize=8)
    for i in range(err.shape[0]):
        for j in range(err.shape[1]):
            ax.text(j, i, f"{err[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if err[i, j] > 55 else "black")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.06, pad=0.03).ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save(fig, path)


def examples_grid(rows, labels, path: str, class_names=None) -> str:
    """Example images with their predictions: `rows` = [(row label, images [N,H,W,C] in [0,1], predicted
    classes [N])], `labels` [N] the true classes. Each image is titled with its prediction, green when
    correct, red when wrong (e.g. rows clean / pgd-20 / autoattack / fog-3); the true class is under each column."""
    n = min(len(labels), *(len(r[1]) for r in rows))
    name = (lambda k: str(class_names[int(k)])[:10]) if class_names is not None else (lambda k: str(int(k)))
    fig = Figure(figsize=(0.85 * n + 0.9, 0.95 * len(rows) + 0.3), dpi=72)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (row_label, imgs, preds) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            img = np.clip(np.asarray(imgs[c], np.float32), 0, 1)
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            ok = int(preds[c]) == int(labels[c])
            if r == len(rows) - 1:  # the true class under each column
                ax.set_xlabel(f"true {name(labels[c])}", fontsize=6, labelpad=2)
            ax.set_title(name(preds[c]), fontsize=6, color="green" if ok else "red", pad=2)
            if c == 0:
                ax.set_ylabel(row_label, fontsize=7)
    fig.tight_layout(pad=0.3)
    return save(fig, path)


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
    return save(fig, path)
