"""timm (0.5.4) / Microsoft Swin Transformer state_dicts -> Flax variables of `robust_jax.models.swin` (strict).

    from robust_jax.models.convert.swin import convert_timm_swin, load_torch_checkpoint
    variables = convert_timm_swin(load_torch_checkpoint("swin_tiny_patch4_window7_224.pth"),
                                  "swin_tiny_patch4_window7_224", num_classes=1000)

Key map (our module names are timm's, with list indices folded into `layers_{i}` / `blocks_{j}`):

  patch_embed/{proj,norm}/...                 <- patch_embed.{proj,norm}.*       conv OIHW -> HWIO
  layers_{i}/blocks_{j}/{norm1,norm2}/...     <- layers.{i}.blocks.{j}.{norm1,norm2}.{weight,bias}
  layers_{i}/blocks_{j}/attn/{qkv,proj}/...   <- layers.{i}.blocks.{j}.attn.{qkv,proj}.*   (O,I) -> (I,O)
  layers_{i}/blocks_{j}/attn/relative_position_bias_table <- the same name (same shape)
  layers_{i}/blocks_{j}/mlp/{fc1,fc2}/...     <- layers.{i}.blocks.{j}.mlp.{fc1,fc2}.*
  layers_{i}/downsample/{norm,reduction}/...  <- layers.{i}.downsample.{norm,reduction}.*
  norm/..., head/...                          <- norm.*, head.*

The torch buffers `layers.{i}.blocks.{j}.attn.relative_position_index` and `layers.{i}.blocks.{j}.attn_mask`
are functions of the geometry that our model recomputes; when present they are consumed and checked
against ours (a mismatch means another window size or image size, and is an error). They may be absent.
Every other torch key must be consumed, every Flax leaf filled and every shape equal; otherwise a
ValueError names them. Checkpoints wrapped as {'model': sd, ...} (Microsoft's releases) are unwrapped.
"""
from __future__ import annotations

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import models
from robust_jax.models import swin as swin_lib
from robust_jax.models import variables_io
from robust_jax.models.convert.fill import fill
from robust_jax.models.convert.resnet import _to_numpy, load_torch_checkpoint, unwrap_state_dict

log = logging.getLogger(__name__)

__all__ = ["convert_timm_swin", "load_torch_checkpoint", "torch_key"]

_INDEXED = re.compile(r"^(layers|blocks)_(\d+)$")
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias",
           "relative_position_bias_table": "relative_position_bias_table"}


def torch_key(path) -> str:
    """Flax params path ('layers_1', 'blocks_0', 'attn', 'qkv', 'kernel') -> 'layers.1.blocks.0.attn.qkv.weight'."""
    *modules, leaf = path
    if leaf not in _LEAVES:
        raise ValueError(f"no torch equivalent for Flax leaf {'/'.join(path)}")
    parts = [f"{m.group(1)}.{m.group(2)}" if (m := _INDEXED.match(mod)) else mod for mod in modules]
    return ".".join(parts + [_LEAVES[leaf]])


def _take_buffers(sd: dict, model) -> list:
    """Removes the geometry buffers from `sd`, returning error lines for any that differ from our geometry."""
    errors = []
    for i, (depth, (res, win, shift)) in enumerate(zip(model.depths, model.stage_geometry)):
        for j in range(depth):
            prefix = f"layers.{i}.blocks.{j}."
            index_key = prefix + "attn.relative_position_index"
            if index_key in sd:
                got = _to_numpy(sd.pop(index_key))
                want = swin_lib.relative_position_index(win)
                if got.shape != want.shape or not np.array_equal(got, want):
                    errors.append(f"  torch buffer {index_key!r} {tuple(got.shape)} is not the relative position "
                                  f"index of a {win}x{win} window (expected shape {want.shape})")
            mask_key = prefix + "attn_mask"
            if j % 2 and shift and mask_key in sd:
                got = _to_numpy(sd.pop(mask_key))
                want = swin_lib.shifted_window_mask(res, win, shift)
                if got.shape != want.shape or not np.allclose(got, want):
                    errors.append(f"  torch buffer {mask_key!r} {tuple(got.shape)} is not the shift mask of a "
                                  f"{res}x{res} grid with {win}x{win} windows shifted by {shift} "
                                  f"(expected shape {want.shape})")
    return errors


def convert_timm_swin(state_dict, model_name: str = "swin_tiny_patch4_window7_224", **model_kwargs):
    """{'params': numpy tree} for `models.get(model_name, **model_kwargs)` from a timm 0.5.4 / Microsoft
    SwinTransformer state_dict (or a checkpoint wrapping one under 'model'/'state_dict'/'net'). Strict:
    raises ValueError naming every unexpected torch key, missing torch key, shape mismatch and geometry
    buffer that disagrees with the model. mean/std/drop rates do not change the variables."""
    model = models.get(model_name, **model_kwargs)
    if not isinstance(model, swin_lib.SwinTransformer):
        raise ValueError(f"{model_name!r} is not a SwinTransformer (got {type(model).__name__})")
    x = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, len(model.mean)), jnp.float32)
    template = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)

    sd = unwrap_state_dict(state_dict)
    buffer_errors = _take_buffers(sd, model)
    try:
        out, used = fill(template["params"], sd, torch_key=torch_key, what=model_name)
    except ValueError as e:
        if buffer_errors:
            raise ValueError("\n".join([str(e)] + buffer_errors)) from None
        raise
    if buffer_errors:
        raise ValueError("\n".join([f"state_dict does not match {model_name}:"] + buffer_errors))
    out = {"params": out}
    variables_io.check_same_structure(out, template, what="converted variables")
    log.info("converted %d torch tensors into %d Flax arrays for %s", len(used), len(jax.tree.leaves(out)),
             model_name)
    return out
