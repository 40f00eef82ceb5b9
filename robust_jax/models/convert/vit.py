"""timm / DeiT VisionTransformer state_dicts -> Flax variables of `robust_jax.models.vit` (strict).

    from robust_jax.models.convert import vit as convert_vit
    from robust_jax.models.convert.resnet import load_torch_checkpoint
    variables = convert_vit.convert_timm_vit(load_torch_checkpoint("deit_base_patch16_224.pth"), "vit_b16",
                                             num_classes=1000)

Key map (our module names are timm's, with list indices folded into `blocks_{i}`):

  cls_token, pos_embed                    <- cls_token, pos_embed              (same shapes)
  patch_embed/proj/{kernel,bias}          <- patch_embed.proj.{weight,bias}    conv OIHW -> HWIO
  blocks_{i}/{norm1,norm2}/{scale,bias}   <- blocks.{i}.{norm1,norm2}.{weight,bias}
  blocks_{i}/attn/{qkv,proj}/...          <- blocks.{i}.attn.{qkv,proj}.*      linear (O,I) -> (I,O)
  blocks_{i}/mlp/{fc1,fc2}/...            <- blocks.{i}.mlp.{fc1,fc2}.*
  norm/{scale,bias}, head/{kernel,bias}   <- norm.*, head.*

Every torch key must be consumed, every Flax leaf filled and every shape equal, otherwise a ValueError
names them. A position embedding of another size is an error that says which image_size the checkpoint
was trained at; nothing is interpolated. DeiT checkpoints ({'model': sd, ...}) are unwrapped.
"""
from __future__ import annotations

import logging
import math
import re

import jax
import jax.numpy as jnp

from robust_jax import models
from robust_jax.models import variables_io
from robust_jax.models import vit as vit_lib
from robust_jax.models.convert.fill import fill
from robust_jax.models.convert.resnet import _to_numpy, load_torch_checkpoint, unwrap_state_dict

log = logging.getLogger(__name__)

__all__ = ["convert_timm_vit", "load_torch_checkpoint", "torch_key"]

_BLOCK = re.compile(r"^blocks_(\d+)$")
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias"}


def torch_key(path) -> str:
    """Flax params path ('blocks_3', 'attn', 'qkv', 'kernel') -> 'blocks.3.attn.qkv.weight'."""
    *modules, leaf = path
    if not modules:  # cls_token, pos_embed
        return leaf
    parts = [f"blocks.{m.group(1)}" if (m := _BLOCK.match(mod)) else mod for mod in modules]
    if leaf not in _LEAVES:
        raise ValueError(f"no torch equivalent for Flax leaf {'/'.join(path)}")
    return ".".join(parts + [_LEAVES[leaf]])


def _check_pos_embed(sd, model) -> None:
    """A clear error when the checkpoint's position embedding is for another image size."""
    if "pos_embed" not in sd:
        return
    shape = tuple(_to_numpy(sd["pos_embed"]).shape)
    want = (1, model.num_patches + 1, model.hidden_dim)
    if shape == want or len(shape) != 3 or shape[2] != model.hidden_dim:
        return  # equal, or a width mismatch the generic shape check reports
    patch = model.patch_size
    if "patch_embed.proj.weight" in sd:
        patch = int(_to_numpy(sd["patch_embed.proj.weight"]).shape[-1])
    grid = math.isqrt(shape[1] - 1)
    if grid * grid == shape[1] - 1:
        expects = f"a {grid}x{grid} grid of {patch}-pixel patches: image_size={grid * patch}"
    else:
        expects = f"{shape[1] - 1} patch tokens, not a square grid after one class token"
    raise ValueError(f"the checkpoint's pos_embed {shape} is for {expects}, but the model has image_size="
                     f"{model.image_size} with patch_size={model.patch_size} ({want[1]} tokens). Build the model "
                     "with the checkpoint's image_size (position embeddings are not interpolated).")


def convert_timm_vit(state_dict, model_name: str = "vit_b16", **model_kwargs):
    """{'params': numpy tree} for `models.get(model_name, **model_kwargs)` from a timm VisionTransformer
    state_dict (or a checkpoint wrapping one under 'model'/'state_dict'/'net'). Strict: raises ValueError
    naming every unexpected torch key, missing torch key and shape mismatch. mean/std/drop rates do not
    change the variables."""
    model = models.get(model_name, **model_kwargs)
    if not isinstance(model, vit_lib.VisionTransformer):
        raise ValueError(f"{model_name!r} is not a VisionTransformer (got {type(model).__name__})")
    x = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, len(model.mean)), jnp.float32)
    template = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
    if set(template) != {"params"}:
        raise ValueError(f"{model_name} has collections {sorted(template)}; expected params only")

    sd = unwrap_state_dict(state_dict)
    _check_pos_embed(sd, model)
    out, used = fill(template["params"], sd, torch_key=torch_key,
                     what=model_name)
    out = {"params": out}
    variables_io.check_same_structure(out, template, what="converted variables")
    log.info("converted %d torch tensors into %d Flax arrays for %s", len(used), len(jax.tree.leaves(out)),
             model_name)
    return out
