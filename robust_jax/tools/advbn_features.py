"""What AdvBN's adversarial feature statistics look like: the factors the attack finds, a few channels'
feature maps before and after, and the perturbation decoded back to an image.

    python -m robust_jax.tools.advbn_features --config configs/digits_advbn.py --workdir runs/digits_advbn \
        [--num 8] [--output runs/digits_advbn/advbn_features.png]

Decoding is feature inversion (Mahendran & Vedaldi): from a grey image, Adam on the relative residual
||front(x') - AdvBN_s(front(x))||^2 plus a total-variation prior, over x' in [0,1], finds an image whose
features carry the adversarial statistics (the same inversion of the clean features is the control), an AdaIN-style picture of the "style" the attack chose (the front is frozen, so this is the
image the head would have to see). From Python: `advbn_features(method, params, model_state, x, y)` returns
the arrays and `plot(result, path)` draws them.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from robust_jax.tools import trained_run


def total_variation(x):
    """Mean absolute difference of neighbouring pixels (the smoothness prior of feature inversion)."""
    return jnp.mean(jnp.abs(x[:, 1:] - x[:, :-1])) + jnp.mean(jnp.abs(x[:, :, 1:] - x[:, :, :-1]))


def invert_features(method, params, model_state, target, x0, *, steps: int = 300, lr: float = 0.02,
                    tv_weight: float = 0.0):
    """An image x' in [0,1] near-minimising ||front(x') - target||^2 / ||target||^2 + tv_weight * TV(x'), from
    x0 (Adam, clipped to [0,1] after each step). Returns (x', relative feature residual)."""
    tx = optax.adam(lr)
    norm = jnp.mean(jnp.square(target)) + 1e-12

    def residual(x):
        f, _ = method.classifier(params, model_state, x, train=False, method="front", cut=method.cut)
        return jnp.mean(jnp.square(f - target)) / norm

    def loss(x):
        return residual(x) + tv_weight * total_variation(x)

    def body(_, carry):
        x, opt = carry
        updates, opt = tx.update(jax.grad(loss)(x), opt, x)
        return jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0), opt

    x, _ = jax.lax.fori_loop(0, steps, body, (x0, tx.init(x0)))
    return x, residual(x)


def advbn_features(method, params, model_state, x, labels, *, inversion_steps: int = 300,
                   tv_weight: float = 0.05) -> dict:
    """Arrays for images x [n,H,W,C]: 'features' / 'adversarial_features' [n,h,w,C], the factors 's_mu' and
    's_sigma' [G,C], 'decoded' (feature inversion of the adversarial features), 'decoded_clean' (the same
    inversion of the clean features, the control), the adv head's predictions on both feature sets (eval
    mode, as in the attack) and the inversion residuals."""
    @jax.jit
    def compute(params, model_state, x, labels):
        f = method.features(params, model_state, x)
        f_adv, pert = method.adversarial_features(params, model_state, f, labels)
        # both start from a uniform grey image: the control shows what inversion recovers of a clean image
        x0 = jnp.full_like(x, 0.5)
        inv = lambda target: invert_features(method, params, model_state, target, x0, steps=inversion_steps,
                                             tv_weight=tv_weight)
        decoded, res_adv = inv(f_adv)
        decoded_clean, res_clean = inv(f)
        predict = lambda ff, bn: jnp.argmax(method.head(params, model_state, ff, train=False, bn=bn)[0], -1)
        return dict(features=f, adversarial_features=f_adv, s_mu=pert["s_mu"], s_sigma=pert["s_sigma"],
                    decoded=decoded, decoded_clean=decoded_clean, residual_adv=res_adv, residual_clean=res_clean,
                    pred_clean=predict(f, "adv"), pred_adv=predict(f_adv, "adv"))

    out = jax.tree.map(np.asarray, compute(params, model_state, x, labels))
    return {**out, "image": np.asarray(x), "labels": np.asarray(labels)}


def strongest_channels(result: dict, k: int = 3):
    """The k channels whose mean feature map the attack changed most (relative to the clean map's range)."""
    f, fa = result["features"], result["adversarial_features"]
    change = np.abs(fa - f).mean((0, 1, 2)) / (np.abs(f).mean((0, 1, 2)) + 1e-6)
    change[np.abs(f).mean((0, 1, 2)) < 1e-6] = -1  # dead channels stay dead
    return list(np.argsort(-change)[:k])


def plot(result: dict, path: str, *, num_channels: int = 3) -> str:
    """Images, decoded adversarial statistics, the strongest channels' maps (clean / adversarial), and the
    factors as a scatter plot."""
    from matplotlib.figure import Figure

    from robust_jax import plots

    n = min(len(result["image"]), 8)
    chans = strongest_channels(result, num_channels)
    rows = [("image", result["image"]), ("decoded clean\nfeatures", result["decoded_clean"]),
            ("decoded adv.\nfeatures", result["decoded"])]
    for c in chans:
        rows.append((f"ch {c} clean", result["features"][..., c:c + 1]))
        rows.append((f"ch {c} adv.", result["adversarial_features"][..., c:c + 1]))
    fig = Figure(figsize=(1.1 * n + 3.2, 1.05 * len(rows)), dpi=110)
    grid = fig.add_gridspec(len(rows), n + 3)
    for r, (label, imgs) in enumerate(rows):
        scale = None
        if label.startswith("ch"):  # the same colour scale for a channel's clean and adversarial rows
            c = int(label.split()[1])
            scale = max(float(result["features"][..., c].max()), float(result["adversarial_features"][..., c].max()),
                        1e-6)
        for i in range(n):
            ax = fig.add_subplot(grid[r, i])
            img = np.asarray(imgs[i])
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else np.clip(img, 0, 1), cmap="gray" if scale is None
                      else "magma", vmin=0, vmax=1 if scale is None else scale)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=7)
            if r == 0:
                ax.set_title(f"y={int(result['labels'][i])}: {int(result['pred_clean'][i])}->"
                             f"{int(result['pred_adv'][i])}", fontsize=6)
    ax = fig.add_subplot(grid[:, n + 1:])
    pairs, counts = np.unique(np.round(np.stack([result["s_mu"].ravel(), result["s_sigma"].ravel()], 1), 3),
                              axis=0, return_counts=True)
    ax.scatter(pairs[:, 0], pairs[:, 1], s=12 * counts, alpha=0.5)  # area = number of (group, channel) pairs
    ax.set_xlabel("s_mu (mean factor)", fontsize=7)
    ax.set_ylabel("s_sigma (std factor)", fontsize=7)
    ax.set_title("factors per group x channel", fontsize=7)
    ax.tick_params(labelsize=6)
    fig.tight_layout(pad=0.3)
    return plots.save(fig, path)


def summary(result: dict) -> str:
    s = np.concatenate([result["s_mu"].ravel(), result["s_sigma"].ravel()])
    acc = lambda p: 100 * float(np.mean(p == result["labels"]))
    return (f"factors: {100 * np.mean(np.abs(s - 1) > 1.0999):.0f}% at a bound of [-0.1, 2.1], "
            f"{100 * np.mean(s == 1.0):.0f}% unmoved; adv head (eval mode) accuracy {acc(result['pred_clean']):.0f}% "
            f"on clean features, {acc(result['pred_adv']):.0f}% on adversarial ones; relative inversion residual "
            f"{float(result['residual_adv']):.3g} (clean control {float(result['residual_clean']):.3g})")


@trained_run.command("advbn_features")
def main(argv=None) -> int:
    p = trained_run.parser("advbn_features", __doc__, "AdvBN",
                           num_help="number of evaluation images (a multiple of the group size)")
    p.add_argument("--eps", type=float, default=0.0,
                   help="attack box [1 - eps, 1 + eps] for the picture (default: the run's method.advbn.eps)")
    args = p.parse_args(argv)
    config = trained_run.load_config(args.config, method="advbn")
    config.unlock()
    config.method.advbn.group_size = 0  # one group: the images shown share their statistics
    if args.eps:
        config.method.advbn.eps = args.eps
    method, params, variables, batch = trained_run.load(config, args.workdir, args.num)
    result = advbn_features(method, params, variables, batch["image"], batch["label"])
    out = plot(result, args.output or os.path.join(args.workdir, "advbn_features.png"))
    print(summary(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
