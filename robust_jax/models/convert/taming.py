"""taming / latent-diffusion / easyrobust VQGAN checkpoints -> Flax variables of `robust_jax.models.vqgan`.

    robust-jax-convert --model vqgan:openimages_f8_16384 --input vqgan_openimages_f8_16384.ckpt \
        --output vqgan_f8.msgpack

A Lightning checkpoint holds the model under 'state_dict' next to the training loss's weights (`loss.*`:
LPIPS and the discriminator); those are dropped (logged), everything else must match key for key. Our
module names mirror taming's with the list indices folded into the name:

  encoder.down.{i}.block.{j}.*   <- encoder/down_{i}_block_{j}/*      (also attn.{j}, downsample)
  decoder.up.{i}.block.{j}.*     <- decoder/up_{i}_block_{j}/*        (also attn.{j}, upsample)
  quantize.embedding.weight      <- quantize/embedding (n_embed, embed_dim)

Convolutions OIHW -> HWIO; GroupNorm weight/bias -> scale/bias.
"""
from __future__ import annotations

import logging
import re
from typing import Union


from robust_jax.models import variables_io
from robust_jax.models import vqgan as vqgan_lib
from robust_jax.models.convert.fill import fill
from robust_jax.models.convert.resnet import load_torch_checkpoint, unwrap_state_dict

log = logging.getLogger(__name__)

LOSS_PREFIX = "loss."
_LIST_MODULE = re.compile(r"^(down|up)_(\d+)_(block|attn)_(\d+)$")
_RESAMPLE = re.compile(r"^(down|up)_(\d+)_(downsample|upsample)$")
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias", "embedding": "weight"}


def torch_key(path) -> str:
    """Flax params path ('encoder', 'down_0_block_1', 'norm1', 'scale') -> 'encoder.down.0.block.1.norm1.weight'."""
    *modules, leaf = path
    parts = []
    for m in modules:
        match = _LIST_MODULE.match(m) or _RESAMPLE.match(m)
        parts.append(".".join(match.groups()) if match else m)
    if leaf == "embedding":
        parts.append("embedding")
    return ".".join(parts + [_LEAVES[leaf]])


def convert_taming_state_dict(checkpoint, model_or_name: Union[str, vqgan_lib.VQModel], **overrides):
    """{'params': numpy tree} for the VQGAN `model_or_name` (a CONFIGS name + field overrides, or a model)
    from a taming-style state_dict or Lightning checkpoint. Raises ValueError naming every unexpected key,
    missing key and shape mismatch (after dropping `loss.*`)."""
    model = vqgan_lib.get(model_or_name, **overrides) if isinstance(model_or_name, str) else model_or_name
    template = vqgan_lib.init_template(model)
    sd = unwrap_state_dict(checkpoint)
    dropped = [k for k in sd if k.startswith(LOSS_PREFIX)]
    if dropped:
        log.info("dropping %d training-loss keys (%s*: LPIPS and discriminator)", len(dropped), LOSS_PREFIX)
    sd = {k: v for k, v in sd.items() if not k.startswith(LOSS_PREFIX)}
    out, used = fill(template, sd, torch_key=lambda path: torch_key(path[1:]), what="the VQGAN (after dropping loss.*)")
    variables_io.check_same_structure(out, template, what="converted VQGAN variables")
    log.info("converted %d tensors into the VQGAN", len(used))
    return out


def convert_taming_file(path: str, name: str, output: str = "", **overrides):
    """Loads a .ckpt/.pt file (weights only), converts it, optionally writes `output` (msgpack)."""
    variables = convert_taming_state_dict(load_torch_checkpoint(path), name, **overrides)
    if output:
        variables_io.save_variables(output, variables)
    return variables
