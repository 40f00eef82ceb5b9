"""`robust-jax-convert`: a PyTorch checkpoint (.pt/.pth) -> our msgpack variables file.

    robust-jax-convert --model resnet18 --num-classes 10 --mean 0,0,0 --std 1,1,1 \
        --input model_test.pt --output resnet18.msgpack

    robust-jax-convert --model vit_b16 --adapt-patch 4 --image-size 32 --new-head --num-classes 10 \
        --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 --input jx_vit_base_p16_224.pth --output vit_b4_cifar.msgpack

    robust-jax-convert --model vqgan:openimages_f8_16384 --input vqgan_openimages_f8_16384.ckpt \
        --output vqgan_f8.msgpack

The output holds {'params', 'batch_stats'} ({'params'} for ViTs and Swins; `variables_io.load_variables`
reads it strictly); a VQGAN ({'params'}) is read with `robust_jax.models.vqgan.load(path, vqgan.get(name))`.
Input normalisation is not in a torch checkpoint: our models normalise inside with their `mean`/`std`
fields, so give the values the torch model's data pipeline used, and build the model with the same
values when loading (the summary prints the line).
"""
from __future__ import annotations

import argparse
import ast
import logging
import os
import sys

import numpy as np

_EPILOG = """\
mean/std are NOT stored in PyTorch checkpoints: pass what the original data pipeline did.
  AutoAttack example / pytorch-cifar ResNet-18 and most CIFAR robust models: raw [0,1] inputs
      -> --mean 0,0,0 --std 1,1,1
  torchvision ImageNet models: --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
Dropped on purpose: BatchNorm num_batches_tracked, TRADES WideResNet sub_block1.* (unused);
a {'state_dict'|'model'|'net': ...} wrapper and a DataParallel 'module.' prefix are removed.
VQGANs (--model vqgan:NAME, NAME one of robust_jax.models.vqgan.CONFIGS): taming / latent-diffusion /
easyrobust Lightning checkpoints; the training loss's `loss.*` weights (LPIPS, discriminator) are dropped;
--num-classes/--mean/--std/--dual-bn do not apply; --model-arg overrides architecture fields.
ViT/DeiT re-targeting (Mo et al. 2022's 224/16 -> 32/4 for CIFAR): --adapt-patch P folds the patch kernel
to PxP (sums of sub-blocks), --image-size S resizes the position embedding bilinearly (align_corners=False,
class token kept); --new-head replaces the classifier with a fresh one for --num-classes (ViT and Swin).
Anything else that does not match the model is an error naming the key.
"""


def _floats(text: str):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected 3 values (one per RGB channel), got {text!r}")
    return values


def _kwarg(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def build_parser() -> argparse.ArgumentParser:
    from robust_jax.models.convert import SUPPORTED_MODELS

    p = argparse.ArgumentParser(prog="robust-jax-convert", description=__doc__.split("\n\n")[0],
                                epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help=f"registered model name: {', '.join(SUPPORTED_MODELS)}; or vqgan:NAME")
    p.add_argument("--input", required=True, help="PyTorch checkpoint (loaded with weights_only=True)")
    p.add_argument("--output", required=True, help="msgpack variables file to write")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--mean", type=_floats, default=(0.0, 0.0, 0.0),
                   help="model input mean, e.g. 0,0,0 (not in the checkpoint; see below)")
    p.add_argument("--std", type=_floats, default=(1.0, 1.0, 1.0), help="model input std, e.g. 1,1,1")
    p.add_argument("--dual-bn", action="store_true",
                   help="build the model with dual BatchNorm and copy each torch BN into both 'clean' and 'adv'")
    p.add_argument("--model-arg", type=_kwarg, action="append", default=[], metavar="KEY=VALUE",
                   help="extra model field, repeatable, e.g. --model-arg depth=16 --model-arg widen_factor=2")
    p.add_argument("--adapt-patch", type=int, default=None, metavar="P",
                   help="ViT/DeiT: fold the checkpoint's patch kernel to PxP and build the model with patch_size=P")
    p.add_argument("--image-size", type=int, default=None, metavar="S",
                   help="ViT/Swin: build the model for SxS images (a ViT's position embedding is resized to it)")
    p.add_argument("--new-head", action="store_true",
                   help="ViT/Swin: replace the checkpoint's classifier by a fresh one with --num-classes outputs")
    p.add_argument("--seed", type=int, default=0, help="key of the --new-head initialisation")
    return p


def _retarget(args, checkpoint, kwargs: dict):
    """Applies --adapt-patch/--image-size/--new-head to the state_dict and the model fields (ViT/Swin only)."""
    from robust_jax.models import convert
    from robust_jax.models.convert import vit_adapt

    if args.adapt_patch is None and args.image_size is None and not args.new_head:
        return checkpoint
    is_vit, is_swin = args.model in convert.VIT_MODELS, args.model in convert.SWIN_MODELS
    if not (is_vit or is_swin):
        raise ValueError(f"--adapt-patch/--image-size/--new-head apply to ViT and Swin models, not {args.model!r}")
    if args.adapt_patch is not None and not is_vit:
        raise ValueError(f"--adapt-patch applies to ViT/DeiT checkpoints, not {args.model!r}")
    if args.adapt_patch is not None and args.image_size is None:
        raise ValueError("--adapt-patch needs --image-size (the position embedding is resized to its patch grid)")
    if args.adapt_patch is not None:
        kwargs["patch_size"] = args.adapt_patch
    if args.image_size is not None:
        kwargs["image_size"] = args.image_size
    if is_vit:
        checkpoint = vit_adapt.adapt_timm_vit(checkpoint, patch_size=args.adapt_patch, image_size=args.image_size)
    if args.new_head:
        checkpoint = vit_adapt.replace_head(checkpoint, args.num_classes, args.seed)
    return checkpoint


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logger = logging.getLogger("robust_jax.models.convert")  # our notes only, not jax's INFO chatter
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
    logger.setLevel(logging.INFO)
    from robust_jax.models import convert, variables_io

    if args.model.startswith(VQGAN_PREFIX):
        return _convert_vqgan(args)
    kwargs = {**dict(num_classes=args.num_classes, mean=args.mean, std=args.std, dual_bn=args.dual_bn),
              **dict(args.model_arg)}
    try:
        checkpoint = _retarget(args, convert.load_torch_checkpoint(args.input), kwargs)
        variables = convert.convert_state_dict(checkpoint, args.model, **kwargs)
    except (FileNotFoundError, ImportError, ValueError, TypeError) as e:
        print(f"robust-jax-convert: error: {e}", file=sys.stderr)
        return 1
    variables_io.save_variables(args.output, variables)

    import jax

    for collection in [c for c in ("params", "batch_stats") if c in variables]:
        leaves = jax.tree.leaves(variables[collection])
        print(f"{collection}: {len(leaves)} arrays, {sum(int(np.size(a)) for a in leaves):,} values")
    print(f"wrote {args.output} ({os.path.getsize(args.output) / 2**20:.1f} MiB)")
    fields = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    print(f"load with: model = robust_jax.models.get({args.model!r}, {fields})\n"
          f"           variables = variables_io.load_variables({args.output!r}, <model.init(...) output>)")
    return 0


VQGAN_PREFIX = "vqgan:"


def _convert_vqgan(args) -> int:
    import jax

    from robust_jax.models.convert import taming

    name, fields = args.model[len(VQGAN_PREFIX):], dict(args.model_arg)
    try:
        variables = taming.convert_taming_file(args.input, name, output=args.output, **fields)
    except (FileNotFoundError, ImportError, ValueError, TypeError) as e:
        print(f"robust-jax-convert: error: {e}", file=sys.stderr)
        return 1
    n = sum(int(np.size(a)) for a in jax.tree.leaves(variables))
    print(f"params: {n:,} values\nwrote {args.output} ({os.path.getsize(args.output) / 2**20:.1f} MiB)")
    extra = "".join(f", {k}={v!r}" for k, v in fields.items())
    print(f"load with: model = robust_jax.models.vqgan.get({name!r}{extra})\n"
          f"           variables = robust_jax.models.vqgan.load({args.output!r}, model)\n"
          f"DAT: --config.method.vqgan.checkpoint={args.output} --config.method.vqgan.name={name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
