"""Re-targeting a pretrained timm ViT/DeiT state_dict to another patch size and image size (Mo et al. 2022).

The reference fine-tunes 224 px / 16 px-patch ImageNet checkpoints on 32 px CIFAR-10 with 4 px patches:

* `fold_patch_kernel`: the 16x16 patch-embedding kernel is cut into a 4x4 grid of 4x4 sub-blocks and each
  sub-block is summed into one tap of a 4x4 kernel. Why this kernel: a 4x4 patch of the 32 px image,
  upsampled 4x by pixel repetition, is exactly one 16x16 patch of a 128 px image, and the 16x16 kernel on
  that patch is the folded 4x4 kernel on the small one. The bias is unchanged.
* `resize_pos_embed`: the 14x14 grid of patch position embeddings is resized bilinearly to 8x8, the class
  token's embedding kept as is. The reference calls `torch.nn.functional.interpolate(mode='bilinear')`
  with its default `align_corners=False`: sample points at half-pixel centres (source coordinate
  (i + 0.5) * in / out - 0.5, clamped at 0), no antialiasing when shrinking. This module computes exactly
  that with explicit interpolation weights (equal to `jax.image.resize(..., 'bilinear', antialias=False)`).
* `new_head`: a freshly initialised classifier (timm's init: truncated normal std .02, zero bias) for the
  new number of classes, as the reference's model starts with when the class count changes.

`adapt_timm_vit(sd, patch_size=4, image_size=32)` applies the first two to a state_dict before the strict
converter (`convert.vit.convert_timm_vit`) runs; `robust-jax-convert --adapt-patch 4 --image-size 32
[--new-head]` is the command-line form.
"""
from __future__ import annotations

import logging
import math

import jax
import numpy as np

from robust_jax.models.convert.resnet import _to_numpy, unwrap_state_dict

log = logging.getLogger(__name__)

__all__ = ["adapt_timm_vit", "bilinear_matrix", "fold_patch_kernel", "new_head", "replace_head", "resize_pos_embed"]


def fold_patch_kernel(weight, patch_size: int) -> np.ndarray:
    """torch conv weight [O, I, K, K] -> [O, I, P, P]: tap (i, j) is the sum of the (K/P) x (K/P) sub-block
    of rows i*K/P .. (i+1)*K/P - 1 and columns j*K/P .. (j+1)*K/P - 1. Needs P to divide K."""
    w = _to_numpy(weight)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise ValueError(f"expected a square conv weight [O, I, K, K], got shape {w.shape}")
    k = w.shape[2]
    if patch_size < 1 or k % patch_size:
        raise ValueError(f"cannot fold a {k}x{k} patch kernel to {patch_size}x{patch_size}: "
                         f"{patch_size} must divide {k}")
    s = k // patch_size
    return w.reshape(w.shape[0], w.shape[1], patch_size, s, patch_size, s).sum(axis=(3, 5))


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float64 weights of 1-D linear interpolation with align_corners=False (PyTorch's rule:
    source coordinate (o + 0.5) * n_in / n_out - 0.5, clamped at 0; the neighbour index clamped at n_in - 1)."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def resize_pos_embed(pos_embed, grid: int, num_prefix_tokens: int = 1) -> np.ndarray:
    """[1, prefix + g*g, D] -> [1, prefix + grid*grid, D]: the first `num_prefix_tokens` rows (the class
    token) kept, the g x g patch grid (row-major) resized bilinearly with align_corners=False."""
    pe = _to_numpy(pos_embed)
    if pe.ndim != 3 or pe.shape[0] != 1:
        raise ValueError(f"expected a position embedding of shape [1, tokens, dim], got {pe.shape}")
    prefix, patches = pe[:, :num_prefix_tokens], pe[0, num_prefix_tokens:]
    g = math.isqrt(patches.shape[0])
    if g * g != patches.shape[0]:
        raise ValueError(f"{patches.shape[0]} patch tokens after {num_prefix_tokens} prefix token(s) are not a "
                         "square grid")
    m = bilinear_matrix(g, grid)
    patches = patches.reshape(g, g, -1).astype(np.float64)
    resized = np.einsum("ih,jw,hwd->ijd", m, m, patches).reshape(1, grid * grid, -1)
    return np.concatenate([prefix, resized.astype(pe.dtype)], axis=1)


def new_head(num_classes: int, dim: int, seed: int = 0) -> dict:
    """{'head.weight' [num_classes, dim], 'head.bias'} in torch layout with timm's init (trunc normal std .02
    bounded at +-2, zero bias)."""
    from robust_jax.models.vit import trunc_normal_init

    w = trunc_normal_init()(jax.random.key(seed), (num_classes, dim))
    return {"head.weight": np.asarray(w, np.float32), "head.bias": np.zeros((num_classes,), np.float32)}


def replace_head(state_dict, num_classes: int, seed: int = 0) -> dict:
    """A copy of a timm ViT/DeiT/Swin state_dict whose `head.weight`/`head.bias` are a fresh `new_head`."""
    sd = dict(unwrap_state_dict(state_dict))
    if "head.weight" not in sd:
        raise ValueError("no 'head.weight' in the state_dict: cannot replace its classifier")
    dim = int(_to_numpy(sd["head.weight"]).shape[-1])
    sd.update(new_head(num_classes, dim, seed))
    log.info("new head: %d classes x %d features (trunc normal std .02, seed %d)", num_classes, dim, seed)
    return sd


def adapt_timm_vit(state_dict, *, patch_size: int | None = None, image_size: int | None = None,
                   num_classes: int | None = None, seed: int = 0) -> dict:
    """A copy of a timm ViT/DeiT state_dict re-targeted as the reference does for CIFAR:

    * `patch_size`: `patch_embed.proj.weight` folded to that kernel (`fold_patch_kernel`);
    * `image_size`: `pos_embed` resized to the grid image_size / patch size (`resize_pos_embed`, class token
      kept). Both together give the 224/16 -> 32/4 adaptation (14x14 -> 8x8 grid);
    * `num_classes`: `head.*` replaced by a fresh timm-initialised head (`replace_head`, key `seed`).

    Each is skipped when None. The result goes to `convert.vit.convert_timm_vit` with the model built with
    the same patch_size/image_size/num_classes.
    """
    sd = dict(unwrap_state_dict(state_dict))
    for key in ("patch_embed.proj.weight", "pos_embed"):
        if key not in sd:
            raise ValueError(f"not a timm ViT state_dict: no {key!r}")
    old_patch = int(_to_numpy(sd["patch_embed.proj.weight"]).shape[-1])
    if patch_size is not None and patch_size != old_patch:
        sd["patch_embed.proj.weight"] = fold_patch_kernel(sd["patch_embed.proj.weight"], patch_size)
        log.info("patch embedding folded from %dx%d to %dx%d", old_patch, old_patch, patch_size, patch_size)
    patch = old_patch if patch_size is None else patch_size
    if image_size is not None:
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch}")
        old = tuple(_to_numpy(sd["pos_embed"]).shape)
        sd["pos_embed"] = resize_pos_embed(sd["pos_embed"], image_size // patch)
        if tuple(sd["pos_embed"].shape) != old:
            log.info("position embedding resized from %s to %s (class token kept)", old, sd["pos_embed"].shape)
    return sd if num_classes is None else replace_head(sd, num_classes, seed)
