"""PyTorch checkpoints -> Flax variables for our models (see docs/loading_pytorch_weights.md).

    from robust_jax.models import convert
    variables = convert.convert_state_dict(convert.load_torch_checkpoint("model.pt"), "resnet18",
                                           num_classes=10)

or from the shell: `robust-jax-convert --model resnet18 --input model.pt --output model.msgpack`.
Families: the ResNets/WideResNets (resnet.py), timm/DeiT ViTs (vit.py; re-targeting to another patch /
image size in vit_adapt.py), timm Swin Transformers (swin.py), taming VQGANs (taming.py,
`--model vqgan:NAME`). torch is optional: it is imported only when a .pt file is read.
"""
from robust_jax.models.convert import resnet
from robust_jax.models.convert.resnet import FAMILIES, load_torch_checkpoint, unwrap_state_dict
from robust_jax.models.convert.swin import convert_timm_swin
from robust_jax.models.convert.vit import convert_timm_vit

VIT_MODELS = ("vit", "vit_b16", "vit_s16", "vit_ti16")
SWIN_MODELS = ("swin", "swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224")
SUPPORTED_MODELS = tuple(sorted(FAMILIES)) + VIT_MODELS + SWIN_MODELS


def convert_state_dict(state_dict, model_name: str, **model_kwargs):
    """{'params', ['batch_stats']} for `models.get(model_name, **model_kwargs)` from a torch state_dict."""
    if model_name in VIT_MODELS + SWIN_MODELS:
        if model_kwargs.pop("dual_bn", False):
            raise ValueError(f"{model_name} has no BatchNorm: --dual-bn does not apply")
        convert = convert_timm_vit if model_name in VIT_MODELS else convert_timm_swin
        return convert(state_dict, model_name, **model_kwargs)
    return resnet.convert_state_dict(state_dict, model_name, **model_kwargs)


__all__ = ["SUPPORTED_MODELS", "convert_state_dict", "load_torch_checkpoint", "unwrap_state_dict"]
