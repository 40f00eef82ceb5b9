"""Adversarial fine-tuning of ImageNet-pretrained ViTs on CIFAR-10 at 32 px with 4 px patches, with ARD + PRM:
the CIFAR-10 recipe of Mo et al. (NeurIPS 2022, "When Adversarial Training Meets Vision Transformers";
docs/vit.md, spec/vit_at.md).

Once, the timm/DeiT 224/16 checkpoint re-targeted to 32/4 (patch kernel folded to 4x4, position embedding
resized 14x14 -> 8x8, fresh 10-class head), saved where `model.init_from` points; the mean/std are CIFAR-10's,
as the reference normalises (they are model fields, not in the file):

    robust-jax-convert --model vit_s16 --adapt-patch 4 --image-size 32 --new-head --num-classes 10 \
        --mean 0.4914,0.4822,0.4465 --std 0.2471,0.2435,0.2616 \
        --input deit_small_patch16_224-cd65a155.pth --output deit_s_cifar32p4.msgpack      # deit_s (default)
    # deit_ti: --model vit_ti16 --input deit_tiny_patch16_224-a1311bcf.pth --output deit_ti_cifar32p4.msgpack
    # vit_b:   --model vit_b16 --input jx_vit_base_p16_224-80ecf9dd.pth --output vit_b_cifar32p4.msgpack
    tfds build cifar10
    python main.py --config configs/cifar10_vit_at.py --workdir runs/c10_deit_s_at_ardprm        # PGD-AT + ARD/PRM
    python main.py --config configs/cifar10_vit_at.py:plain --workdir runs/c10_deit_s_at         # baseline
    python main.py --config configs/cifar10_vit_at.py:vit_b,trades --workdir runs/c10_vit_b_trades_ardprm
    python main.py --config configs/cifar10_vit_at.py:smoke --workdir /tmp/smoke   # CPU, fake data, seconds

Args (comma-separated): model `deit_s` (default; DeiT-S, 22M), `deit_ti` (DeiT-Ti) or `vit_b` (ViT-B/16,
the Google JAX weights timm ports); method `trades` or `mart` (default PGD-AT); `plain` turns ARD and PRM off
(the reference's "vanilla" runs); `smoke` (2 steps on fake data with a 2-block ViT, for tests).
model.init_from defaults to the file the matching command above writes (`<model>_cifar32p4.msgpack`).

The reference recipe (train_cifar.py / parser_cifar.py defaults): 40 epochs, batch 64, SGD lr 0.1 momentum
0.9 wd 1e-4 on every parameter, gradient clipping at global norm 1.0, lr constant, x0.1 from epoch 35 and
x0.01 from epoch 38 (epochs-5, epochs-2; the fractional epoch, so it switches mid-epoch step-exactly);
random crop (pad 4) + flip, no resizing (32 px, 8x8 patch grid); Linf eps 8/255, PGD-10 step 2/255, attack in
eval mode (uniform start for PGD-AT, x + 0.001 N(0,I) for TRADES/MART, beta 6); ARD + PRM with keep
probability p(t) = min(t/10, 1) * 1 (keep_max 1, n_w = keep_warmup_epochs 10): both fade out over the first
10 epochs. Evaluation as the reference on the 10,000 test images: clean, PGD-20, PGD-100, CW-20 (step
2/255, one uniform restart) and AutoAttack standard Linf 8/255.
PGD-AT mixes each batch as the reference does with timm's Mixup: mixup alpha 0.8 / cutmix alpha 1.0 on 30% of
the batches (`mix_prob`), cutmix with probability 0.5 (`cutmix_prob`), before the attack, with the soft-target CE
in the attack and the loss; TRADES/MART do not mix (nor does the reference's). Differences, documented: timm
pairs each image with the reversed batch, we with a random permutation; the reference's PGD/CW evaluation stops
updating a point once misclassified and clamps the CW margin at -10, ours runs every step on every point
(robust accuracy can only be equal or lower).
Published: the paper's CIFAR-10 tables could not be read here, so no CIFAR number is quoted; for scale, the
reference's ImageNet models (configs/imagenet_vit_at.py) are listed by RobustBench at 68.38% clean / 34.40%
AutoAttack (ViT-B) and 74.66% / 38.30% (Swin-B), Linf 4/255. Not run here (no accelerator, no CIFAR-10).
"""
import ml_collections

from configs import common

MODELS = {  # arg: (registry name, converted checkpoint)
    "deit_s": ("vit_s16", "deit_s_cifar32p4.msgpack"),
    "deit_ti": ("vit_ti16", "deit_ti_cifar32p4.msgpack"),
    "vit_b": ("vit_b16", "vit_b_cifar32p4.msgpack"),
}
METHODS = ("trades", "mart")  # default: pgd_at
ARGS = tuple(MODELS) + METHODS + ("plain", "smoke")
SMOKE_VIT = {"image_size": 32, "patch_size": 4, "hidden_dim": 32, "depth": 2, "num_heads": 2}


def one_of(args, choices, default, *, config):
    """The single argument of `args` among `choices`, or `default` when none is given."""
    picked = sorted(set(args) & set(choices))
    if len(picked) > 1:
        raise ValueError(f"{config}: choose one of {', '.join(choices)}, got {', '.join(picked)}")
    return picked[0] if picked else default


def vit_at_method(c, method: str, *, eps: float, step_size: float, steps: int, ard_prm: bool,
                  keep_warmup_epochs: float, prm_patch: int = 0, beta: float = 6.0):
    """The reference's objective block: PGD-AT (uniform start, timm Mixup on 30% of the batches), TRADES or MART
    (x + 0.001 N(0,I), beta 6), the attack in eval mode, ARD + PRM with keep_max 1 fading in over
    `keep_warmup_epochs` (off when not `ard_prm`)."""
    c.method.name = method
    if method in ("trades", "mart"):
        c.method.beta = beta
    else:
        c.method.update(mixup_alpha=0.8, cutmix_alpha=1.0, mix_prob=0.3, cutmix_prob=0.5)
    c.method.attack = common.attack(
        eps=eps, step_size=step_size, steps=steps, random_start="uniform" if method == "pgd_at" else "normal",
        train_mode=False, ard=ard_prm, prm=ard_prm, prm_patch=prm_patch if ard_prm else 0, keep_max=1.0,
        keep_warmup_epochs=keep_warmup_epochs if ard_prm else 0.0)


def reference_optim(c, *, epochs: float, momentum: float = 0.9):
    """SGD lr 0.1, wd 1e-4 (all parameters, PyTorch's SGD), clip 1.0, lr x0.1 at epochs-5 and x0.01 at epochs-2."""
    c.optim.update(name="sgd", lr=0.1, momentum=momentum, nesterov=False, weight_decay=1e-4, weight_decay_on="all",
                   grad_clip=1.0, schedule="piecewise", decay_epochs=(epochs - 5, epochs - 2), decay_factor=0.1,
                   warmup_epochs=0.0)


def get_config(arg=None):
    args = common.parse_args(arg, ARGS, config=__name__)
    model = one_of(args, tuple(MODELS), "deit_s", config=__name__)
    method = one_of(args, METHODS, "pgd_at", config=__name__)
    name, checkpoint = MODELS[model]
    c = common.base()
    c.data.update(name="cifar10", num_classes=10, image_size=32, train_augment="crop_flip", crop_padding=4,
                  eval_preprocess="none")
    c.model.update(name=name, mean=common.CIFAR10_MEAN, std=common.CIFAR10_STD, init_from=checkpoint,
                   kwargs=ml_collections.ConfigDict({"image_size": 32, "patch_size": 4}))
    epochs = 40
    vit_at_method(c, method, eps=8 / 255, step_size=2 / 255, steps=10, ard_prm="plain" not in args,
                  keep_warmup_epochs=10)
    reference_optim(c, epochs=epochs)
    spe = 50_000 // 64  # 781 steps per epoch
    c.train.update(batch_size=64, epochs=epochs, log_every=100, eval_every=5 * spe, eval_suite="clean,pgd-10",
                   eval_examples=1000, checkpoint_every=spe)
    c.eval.update(batch_size=500, num_examples=0, eps=8 / 255, step_size=2 / 255, norm="linf",
                  suite="clean,pgd-20,pgd-100,cw-20,autoattack", curve_eps=(),
                  autoattack=dict(version="standard", norm="linf", eps=8 / 255, seed=0, batch_size=500))
    if "smoke" in args:
        common.smoke(c, image="32x32x3", model_kwargs=SMOKE_VIT)
        c.model.update(name="vit", init_from="")
    return common.lock(c)
