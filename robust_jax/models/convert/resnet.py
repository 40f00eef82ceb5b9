"""PyTorch state_dict -> Flax variables for the ResNet-like families (key by key, strict).

Our Linen modules are named after their PyTorch originals, so a Flax leaf path maps to one torch key
by a small per-family table of module renames plus a fixed leaf table:

  params/<mods>/kernel  <- <mods>.weight         conv (O,I,kh,kw) -> (kh,kw,I,O); linear (O,I) -> (I,O)
  params/<mods>/bias    <- <mods>.bias
  params/<mods>/scale   <- <mods>.weight         (BatchNorm affine weight)
  batch_stats/<mods>/mean <- <mods>.running_mean
  batch_stats/<mods>/var  <- <mods>.running_var

The expected tree comes from the model itself (`jax.eval_shape(model.init, ...)`), and every torch
key must be consumed, every Flax leaf filled and every shape equal; otherwise a ValueError names the
keys. The only torch keys dropped on purpose (and logged) are BatchNorm `num_batches_tracked`
counters and, for the WideResNets, TRADES' `sub_block1.*` (built in its `__init__`, never used in
`forward`). Checkpoints wrapped as {'state_dict'|'model'|'net': sd, ...} are unwrapped and a
DataParallel `module.` prefix (on every key) is stripped, both logged.

Models built with `dual_bn=True` receive the single torch BatchNorm in both their `clean` and `adv`
sets (the starting point of AdvBN / AdvProp fine-tuning).

torch is an optional dependency: it is imported only inside `load_torch_checkpoint`; the converter
itself accepts any mapping of torch tensors or numpy arrays.
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import models
from robust_jax.models import variables_io

log = logging.getLogger(__name__)

# Per family: renames of Flax module names to torch module paths, and torch key prefixes to drop.
_CIFAR_RESNET = dict(renames={"shortcut_conv": "shortcut.0", "shortcut_bn": "shortcut.1"}, drop=())
_TORCHVISION_RESNET = dict(renames={"shortcut_conv": "downsample.0", "shortcut_bn": "downsample.1"}, drop=())
_PREACT_RESNET = dict(renames={"shortcut_conv": "shortcut.0"}, drop=())
_WIDE_RESNET = dict(renames={f"block{s}": f"block{s}.layer" for s in (1, 2, 3)}, drop=("sub_block1.",))

FAMILIES = {
    "resnet18": _CIFAR_RESNET,         # Kuang Liu's pytorch-cifar / AutoAttack example ResNet-18
    "resnet50": _TORCHVISION_RESNET,   # torchvision ResNet-50 (v1.5)
    "preact_resnet18": _PREACT_RESNET,  # Rice et al. 2020
    "wrn28_10": _WIDE_RESNET,           # TRADES / MART WideResNets
    "wrn34_10": _WIDE_RESNET,
}

# (collection, Flax leaf name) -> torch key suffix.
_LEAVES = {
    ("params", "kernel"): "weight",
    ("params", "bias"): "bias",
    ("params", "scale"): "weight",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_WRAPPER_KEYS = ("state_dict", "model", "net")
_DP_PREFIX = "module."


def load_torch_checkpoint(path: str):
    """torch.load(path) on CPU with weights_only=True (no arbitrary pickled code is run)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}")
    try:
        import torch
    except ImportError as e:
        raise ImportError("reading PyTorch checkpoints needs torch: pip install torch "
                          "(or pip install -e .[parity])") from e
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError (and others) for non-weights content
        raise ValueError(f"could not load {path!r} with torch.load(weights_only=True): {e}\n"
                         "If it pickles Python objects beyond tensors, re-save only the weights with "
                         "torch.save(model.state_dict(), path) in a trusted environment.") from e


def unwrap_state_dict(checkpoint) -> dict:
    """The bare state_dict of a checkpoint: descends {'state_dict'|'model'|'net': ...} wrappers and
    strips a DataParallel 'module.' prefix when every key has it."""
    sd = checkpoint
    while isinstance(sd, Mapping):
        wrapper = next((k for k in _WRAPPER_KEYS if isinstance(sd.get(k), Mapping)), None)
        if wrapper is None:
            break
        log.info("using the state_dict under checkpoint key %r", wrapper)
        sd = sd[wrapper]
    if not isinstance(sd, Mapping):
        raise ValueError(f"expected a state_dict (a mapping of names to tensors), got {type(sd).__name__}")
    sd = dict(sd)
    if sd and all(isinstance(k, str) and k.startswith(_DP_PREFIX) for k in sd):
        log.info("stripping the DataParallel prefix %r from every key", _DP_PREFIX)
        sd = {k[len(_DP_PREFIX):]: v for k, v in sd.items()}
    return sd


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor; duck-typed so torch is not imported here
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # bf16/fp16 checkpoints: numpy has no bf16, our params are float32
        return value.numpy()
    return np.asarray(value)


def expected_variables(model, image_size: int = 32):
    """ShapeDtypeStructs of `model`'s {'params', 'batch_stats'}, without computing anything."""
    x = jax.ShapeDtypeStruct((1, image_size, image_size, len(model.mean)), jnp.float32)
    return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)


def torch_key(path, family: dict, dual_bn: bool) -> str:
    """Flax leaf path ('params', 'layer1', '0', 'conv1', 'kernel') -> torch key 'layer1.0.conv1.weight'."""
    collection, *modules, leaf = path
    if dual_bn and modules and modules[-1] in ("clean", "adv"):
        modules = modules[:-1]  # both BN sets read the one torch BN
    if (collection, leaf) not in _LEAVES:
        raise ValueError(f"no torch equivalent for Flax leaf {'/'.join(path)}")
    return ".".join([family["renames"].get(m, m) for m in modules] + [_LEAVES[collection, leaf]])


def convert_state_dict(state_dict, model_name: str, **model_kwargs):
    """Converts a torch state_dict (or a wrapping checkpoint) for `models.get(model_name, **model_kwargs)`.

    Returns {'params': ..., 'batch_stats': ...} of numpy arrays, ready for `model.apply` or
    `variables_io.save_variables`. Raises ValueError naming every unexpected torch key, missing torch
    key and shape mismatch. `model_kwargs` are the model's fields (num_classes, dual_bn, depth, ...);
    mean/std do not change the variables.
    """
    if model_name not in FAMILIES:
        raise ValueError(f"no PyTorch converter for model {model_name!r}; supported: {', '.join(sorted(FAMILIES))}")
    family = FAMILIES[model_name]
    model = models.get(model_name, **model_kwargs)
    template = expected_variables(model)
    if set(template) != {"params", "batch_stats"}:
        raise ValueError(f"{model_name} has collections {sorted(template)}; expected params and batch_stats")

    sd = unwrap_state_dict(state_dict)
    dropped = {k for k in sd if k.endswith("num_batches_tracked") or k.startswith(family["drop"])}
    if dropped:
        log.info("dropping %d torch keys with no Flax counterpart (num_batches_tracked%s)", len(dropped),
                 "".join(f", {p}*" for p in family["drop"]))
    sd = {k: v for k, v in sd.items() if k not in dropped}

    from robust_jax.models.convert.fill import fill

    out, used = fill(template, sd, torch_key=lambda path: torch_key(path, family, model.dual_bn), what=model_name)
    variables_io.check_same_structure(out, template, what="converted variables")  # a cheap guard
    log.info("converted %d torch tensors into %d Flax arrays for %s", len(used), len(jax.tree.leaves(out)),
             model_name)
    return out
