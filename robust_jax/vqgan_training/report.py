"""What a VQGAN training run leaves in its workdir for people and for DAT:

  vqgan.msgpack       the VQGAN's variables (EMA if kept), read by `models.vqgan_io.load_trained` / DAT's method.vqgan.checkpoint
  vqgan_model.json    the VQModel fields, so the model is rebuilt from the workdir alone
  reconstructions.png originals (top) and reconstructions (bottom) of the first evaluation images
  report.json / .md   reconstruction L1 and PSNR, codebook usage and perplexity on the evaluation split
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import data
from robust_jax.evaluation import chunks
from robust_jax.vqgan_training.objective import code_statistics

@functools.partial(jax.jit, static_argnums=0)
def _batch_stats(model, variables, batch):
    """Sums over the real examples of a batch (L1, PSNR, count), its codes and reconstructions. Compiled once
    per model: the variables are an argument (not closed-over constants), so periodic evaluations reuse it."""
    out = model.apply(variables, batch["image"])
    rec = (jnp.clip(out["dec"], -1, 1) + 1) / 2
    m = batch["mask"].astype(jnp.float32)
    err = jnp.mean(jnp.abs(rec - batch["image"]), axis=(1, 2, 3))
    mse = jnp.mean(jnp.square(rec - batch["image"]), axis=(1, 2, 3))
    return jnp.sum(err * m), jnp.sum(10 * jnp.log10(1 / jnp.maximum(mse, 1e-12)) * m), jnp.sum(m), out["indices"], rec


def reconstruction_metrics(model, variables, config, mesh, num_examples=None):
    """Means over the evaluation split: L1 on [0,1], PSNR, codebook usage and perplexity; plus the first
    images and their reconstructions."""
    cfg = config.eval
    n = num_examples if num_examples is not None else (cfg.num_examples or None)
    batches, num_batches = data.eval_batches(config.data, cfg.split or config.data.eval_split,
                                             global_batch_size=cfg.batch_size, mesh=mesh, num_examples=n)

    totals, codes, first = np.zeros(3), [], None
    for _ in range(num_batches):
        batch = next(batches)
        l1, ps, count, idx, rec = jax.device_get(_batch_stats(model, variables, batch))
        totals += (l1, ps, count)
        mask = np.asarray(batch["mask"]) > 0
        codes.append(np.asarray(idx)[mask])
        if first is None:
            first = (np.asarray(batch["image"])[mask], rec[mask])
    usage, perplexity = code_statistics(jnp.asarray(np.concatenate(codes)), model.n_embed)
    return {"l1": totals[0] / totals[2], "psnr": totals[1] / totals[2], "code_usage": float(usage),
            "perplexity": float(perplexity), "num_examples": int(totals[2])}, first


def write(report: dict, images, reconstructions, workdir: str, num_images: int) -> None:
    from robust_jax import plots

    k = min(num_images, len(images))
    plots.image_grid([images[:k], reconstructions[:k]], ["image", "reconstruction"],
                     os.path.join(workdir, "reconstructions.png"))
    chunks.write_json(os.path.join(workdir, "report.json"), report)
    m, arch = report["metrics"], report["vqgan"]
    lines = ["# VQGAN reconstruction report", "",
             f"Data: {report['data']['name']} / {report['data']['split']} ({m['num_examples']} images)  ",
             f"VQGAN: ch {arch['ch']}, ch_mult {tuple(arch['ch_mult'])}, {arch['n_embed']} codes of dim "
             f"{arch['embed_dim']}, downsampling x{2 ** (len(arch['ch_mult']) - 1)}  ",
             f"Variables: `{report['variables']}`", "",
             "| metric | value |", "|---|---|",
             f"| L1 (pixels in [0,1]) | {m['l1']:.4f} |", f"| PSNR (dB) | {m['psnr']:.2f} |",
             f"| codebook usage (%) | {100 * m['code_usage']:.1f} |", f"| code perplexity | {m['perplexity']:.1f} |",
             "", "![reconstructions](reconstructions.png)"]
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
