"""Model registry: `models.get(name, num_classes=..., mean=..., std=..., **kwargs)` -> Linen module.

Every model takes float32 NHWC images in [0,1], normalises inside, and is called as
`model.apply(variables, x, train=bool, bn='clean')`; staged models also expose `front`/`back`.
"""
from __future__ import annotations

import functools

from robust_jax.models.cnn import SmallCNN
from robust_jax.models.preact_resnet import PreActResNet
from robust_jax.models.resnet import ResNet
from robust_jax.models.swin import SwinTransformer
from robust_jax.models.vit import VisionTransformer
from robust_jax.models.wideresnet import WideResNet

REGISTRY = {
    "small_cnn": SmallCNN,
    "preact_resnet18": functools.partial(PreActResNet, stage_sizes=(2, 2, 2, 2)),
    "resnet18": functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block="basic", stem_type="cifar",
                                  head_name="linear"),
    "resnet50": functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block="bottleneck", stem_type="imagenet",
                                  head_name="fc"),
    "wrn": WideResNet,  # any depth/widen_factor via kwargs
    "wrn28_10": functools.partial(WideResNet, depth=28, widen_factor=10),
    "wrn34_10": functools.partial(WideResNet, depth=34, widen_factor=10),
    "vit": VisionTransformer,  # any fields via kwargs
    "vit_b16": functools.partial(VisionTransformer, patch_size=16, hidden_dim=768, depth=12, num_heads=12),
    "vit_s16": functools.partial(VisionTransformer, patch_size=16, hidden_dim=384, depth=12, num_heads=6),
    "vit_ti16": functools.partial(VisionTransformer, patch_size=16, hidden_dim=192, depth=12, num_heads=3),
    "swin": SwinTransformer,  # any fields via kwargs
    "swin_tiny_patch4_window7_224": functools.partial(SwinTransformer, patch_size=4, window_size=7, embed_dim=96,
                                                      depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "swin_small_patch4_window7_224": functools.partial(SwinTransformer, patch_size=4, window_size=7, embed_dim=96,
                                                       depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "swin_base_patch4_window7_224": functools.partial(SwinTransformer, patch_size=4, window_size=7, embed_dim=128,
                                                      depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
}


def get(name: str, **kwargs):
    """Builds the registered model `name` with the given fields (num_classes, mean, std, dual_bn, ...)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](**kwargs)
