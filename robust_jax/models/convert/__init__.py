"""PyTorch checkpoints -> Flax variables for our models (see docs/loading_pytorch_weights.md).

    from robust_jax.models import convert
    variables = convert.convert_state_dict(convert.load_torch_checkpoint("model.pt"), "resnet18",
                                           num_classes=10)

or from the shell: `robust-jax-convert --model resnet18 --input model.pt --output model.msgpack`.
torch is optional: it is imported only when a .pt file is read.
"""
from robust_jax.models.convert.resnet import (FAMILIES, convert_state_dict, load_torch_checkpoint,
                                              unwrap_state_dict)

SUPPORTED_MODELS = tuple(sorted(FAMILIES))

__all__ = ["SUPPORTED_MODELS", "convert_state_dict", "load_torch_checkpoint", "unwrap_state_dict"]
