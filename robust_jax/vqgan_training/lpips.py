"""LPIPS (Zhang et al. 2018, v0.1, VGG-16) in Flax: the perceptual term of taming's VQGAN loss.

    d = LPIPS().apply(variables, x0, x1)       # images on the [-1,1] scale, NHWC -> [B] distances

Inputs are shifted/scaled per channel, passed through torchvision's VGG-16 `features` up to relu5_3; the
activations at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 are unit-normalised over channels, their
squared differences weighted per channel by a 1x1 conv without bias (the learned "lin" layers), averaged
over space and summed over the five layers. Frozen and in inference mode, as taming uses it.

Weights: torchvision's ImageNet VGG-16 (`features.*`) plus the lin layers the `lpips` package ships
(`lpips/weights/v0.1/vgg.pth`, keys `lin{k}.model.1.weight`), or one `lpips.LPIPS(net='vgg')` state_dict
(`net.slice{k}.{i}.*` + `lin{k}.*`). Neither can be downloaded at run time here:

    from robust_jax.vqgan_training import lpips
    lpips.convert_files(["vgg16-397923af.pth", "<site-packages>/lpips/weights/v0.1/vgg.pth"], "lpips_vgg.msgpack")

and set `vqgan.perceptual_weight=1.0 vqgan.lpips_weights=lpips_vgg.msgpack`.
"""
from __future__ import annotations

import re
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robust_jax.models import variables_io
from robust_jax.models.convert.fill import fill
from robust_jax.models.convert.resnet import load_torch_checkpoint, unwrap_state_dict

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# torchvision vgg16.features: conv indices per LPIPS slice; each slice after the first starts with a 2x2 max-pool.
SLICES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
WIDTHS = (64, 128, 256, 512, 512)


def normalize(f, eps: float = 1e-10):
    return f / (jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
    slices: Sequence[Sequence[int]] = SLICES
    widths: Sequence[int] = WIDTHS

    def setup(self):
        self.convs = {i: nn.Conv(w, (3, 3), padding=((1, 1), (1, 1)), name=f"features_{i}")
                      for convs, w in zip(self.slices, self.widths) for i in convs}
        self.lins = [nn.Conv(1, (1, 1), use_bias=False, name=f"lin{k}") for k in range(len(self.slices))]

    def features(self, x):
        """The five relu activations (relu1_2 ... relu5_3) of the shifted/scaled input."""
        x = (x - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
        out = []
        for k, convs in enumerate(self.slices):
            if k:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for i in convs:
                x = nn.relu(self.convs[i](x))
            out.append(x)
        return out

    def __call__(self, x0, x1):
        if x0.shape[-1] == 1:  # grey images: VGG sees them as RGB
            x0, x1 = jnp.repeat(x0, 3, -1), jnp.repeat(x1, 3, -1)
        total = 0.0
        for lin, f0, f1 in zip(self.lins, self.features(x0), self.features(x1)):
            total = total + jnp.mean(lin(jnp.square(normalize(f0) - normalize(f1))), axis=(1, 2, 3))
        return total


def _template():
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return jax.eval_shape(LPIPS().init, jax.random.key(0), x, x)


def _torch_key(path) -> str:
    name, leaf = path[-2], path[-1]
    if name.startswith("lin"):
        return f"{name}.model.1.weight"
    return f"features.{name.split('_')[1]}.{'weight' if leaf == 'kernel' else 'bias'}"


def convert_state_dict(state_dict) -> dict:
    """{'params': ...} from torchvision `features.*` + `lin{k}.model.1.weight` keys, or an lpips.LPIPS state_dict
    (`net.slice{k}.{i}.*`, `scaling_layer.*` buffers dropped). Strict otherwise."""
    sd = {}
    for key, value in unwrap_state_dict(state_dict).items():
        if key.startswith(("scaling_layer.", "lins.")):
            continue  # the fixed shift/scale constants (built in above); `lins.{k}` aliases `lin{k}` in lpips
        m = re.match(r"^net\.slice\d\.(\d+)\.(weight|bias)$", key)
        sd[f"features.{m.group(1)}.{m.group(2)}" if m else key] = value
    # torchvision's classifier head is not part of LPIPS (a whole vgg16 state_dict may be given).
    sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
    params, _ = fill(_template()["params"], sd, torch_key=_torch_key, what="LPIPS (VGG-16 features + lin layers)")
    return {"params": params}


def convert_files(paths, output: str) -> dict:
    """Merges torch files (e.g. torchvision's vgg16 .pth and lpips' lin weights), converts, writes msgpack."""
    merged = {}
    for p in paths:
        merged.update(unwrap_state_dict(load_torch_checkpoint(p)))
    variables = convert_state_dict(merged)
    variables_io.save_variables(output, variables)
    return variables


def load(path: str):
    """LPIPS variables from a msgpack written by `convert_files` (strict)."""
    return variables_io.load_variables(path, _template())
