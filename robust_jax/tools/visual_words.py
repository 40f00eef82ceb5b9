"""Visual words of DAT: images, their VQGAN reconstructions, the adversarial discrete images the classifier
trains on, and which codebook entries the attack flipped.

    python -m robust_jax.tools.visual_words --config configs/digits_dat.py --workdir runs/digits_dat \
        [--num 8] [--output runs/digits_dat/visual_words.png]

From Python (e.g. a notebook): `visual_words(method, params, model_state, x, y, key)` with a DAT method
object returns the arrays; `plot(result, path)` draws the grid. The code-change map compares the codes of
the adversarial input with those of the clean image; `requantised` counts the codes that quantising the
reconstruction a second time changes with no attack at all (Q is not idempotent), so the two can be told
apart.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax.tools import trained_run


def visual_words(method, params, model_state, x, labels, key) -> dict:
    """Arrays for `n` images x [n,H,W,C] in [0,1]: 'image', 'reconstruction' Q(x), 'adversarial' (the
    discrete image DAT trains on), codes of each [n,h,w], 'flipped' (adversarial codes != clean codes),
    'requantised' (codes of Q(x) != codes of x), 'attack_flipped' (adversarial codes != codes of Q(x)), and
    the classifier's predictions on each image row."""
    # Variables are arguments of the compiled functions, never closed over (they would become constants).
    frozen, vq = method.frozen, method.vqgan
    encode = functools.partial(jax.jit(lambda f, v: vq.apply(f["vqgan"], v, method=vq.encode)), frozen)
    quantize = functools.partial(jax.jit(lambda f, v: method.quantizer(f)(v)), frozen)
    targets = jax.nn.one_hot(labels, method.num_classes)
    x_adv = jax.jit(method.attack)(params, model_state, x, targets, key, frozen)
    adversarial = quantize(x_adv)
    reconstruction = quantize(x)
    codes = {k: np.asarray(encode(v)) for k, v in (("image", x), ("reconstruction", reconstruction),
                                                   ("adversarial", x_adv))}
    classify = jax.jit(lambda p, s, v: jnp.argmax(method.classifier(p, s, v, train=False)[0], -1))
    predict = functools.partial(classify, params, model_state)
    return {"image": np.asarray(x), "reconstruction": np.asarray(reconstruction),
            "adversarial": np.asarray(adversarial), "labels": np.asarray(labels),
            "codes": codes["image"], "adversarial_codes": codes["adversarial"],
            "flipped": codes["adversarial"] != codes["image"],
            "requantised": codes["reconstruction"] != codes["image"],
            "attack_flipped": codes["adversarial"] != codes["reconstruction"],
            "predictions": {k: np.asarray(predict(v)) for k, v in
                            (("image", x), ("reconstruction", reconstruction), ("adversarial", adversarial))}}


def change_map(images, flipped):
    """The images dimmed to grey with every flipped code's cell tinted red ([n,H,W,3])."""
    images = np.asarray(images, np.float32)
    grey = images.mean(-1, keepdims=True) * 0.6 + 0.2
    n, h, w, _ = images.shape
    fh, fw = h // flipped.shape[1], w // flipped.shape[2]
    mask = np.repeat(np.repeat(flipped, fh, axis=1), fw, axis=2)[..., None]
    red = np.concatenate([np.ones_like(grey), grey * 0.3, grey * 0.3], -1)
    return np.where(mask, red, np.repeat(grey, 3, -1))


def plot(result: dict, path: str, class_names=None) -> str:
    from robust_jax import plots

    name = (lambda i: class_names[i]) if class_names is not None else str
    per_image = result["flipped"].reshape(len(result["flipped"]), -1)
    titles = [f"{name(int(y))}: {int(f.sum())}/{f.size} flipped" for y, f in zip(result["labels"], per_image)]
    preds = result["predictions"]
    rows = [result["image"], result["reconstruction"], result["adversarial"],
            change_map(result["image"], result["flipped"])]
    labels = ["image", "Q(image)", "adversarial\ndiscrete", "flipped\ncodes (red)"]
    path = plots.image_grid(rows, labels, path, titles=titles)
    acc = {k: float(np.mean(v == result["labels"])) for k, v in preds.items()}
    print(f"codes flipped by the attack: {100 * result['flipped'].mean():.2f}% of the clean image's "
          f"(by re-quantisation alone: {100 * result['requantised'].mean():.2f}%; adversarial vs Q(image): "
          f"{100 * result['attack_flipped'].mean():.2f}%); accuracy on these images: "
          + ", ".join(f"{k} {100 * v:.0f}%" for k, v in acc.items()))
    return path


@trained_run.command("visual_words")
def main(argv=None) -> int:
    p = trained_run.parser("visual_words", __doc__, "DAT")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from robust_jax import data
    from robust_jax.evaluation import shift_sets

    config = trained_run.load_config(args.config, method="dat")
    method, params, variables, batch = trained_run.load(config, args.workdir, args.num)
    result = visual_words(method, params, variables, batch["image"], batch["label"], jax.random.key(args.seed))
    out = plot(result, args.output or os.path.join(args.workdir, "visual_words.png"),
               class_names=shift_sets.class_names(data.source_for(config.data)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
