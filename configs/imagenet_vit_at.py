"""Adversarial fine-tuning of pretrained ViT-B/16, DeiT-S/16 and Swin-B on ImageNet-1k (Linf 4/255) or
Imagenette (Linf 8/255) at 224 px with ARD + PRM: the ImageNet / Imagenette recipes of Mo et al. (NeurIPS 2022,
"When Adversarial Training Meets Vision Transformers"; docs/vit.md, spec/vit_at.md).

Once, the pretrained checkpoint converted where `model.init_from` points (mean/std: the ImageNet statistics the
reference normalises with, for every model):

    S="--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225"
    # vit_b (ImageNet): the reference starts from timm's ImageNet-21k ViT-B/16; drop its pre-logits layer first
    # (the reference's model has none when the class count changes), then a fresh 1000-class head
    python -c "import torch; sd = torch.load('jx_vit_base_patch16_224_in21k-e5005f0a.pth', map_location='cpu'); \
        torch.save({k: v for k, v in sd.items() if not k.startswith('pre_logits.')}, 'vit_b_in21k.pth')"
    robust-jax-convert --model vit_b16 --new-head --num-classes 1000 $S --input vit_b_in21k.pth \
        --output vit_b_in1k_init.msgpack
    # swin_b (ImageNet): Microsoft's ImageNet-22k Swin-B, fresh 1000-class head
    robust-jax-convert --model swin_base_patch4_window7_224 --new-head --num-classes 1000 $S \
        --input swin_base_patch4_window7_224_22k.pth --output swin_b_in1k_init.msgpack
    # deit_s (ImageNet): DeiT-S as it is (already 1000 classes)
    robust-jax-convert --model vit_s16 --num-classes 1000 $S --input deit_small_patch16_224-cd65a155.pth \
        --output deit_s_in1k_init.msgpack
    # imagenette: --new-head --num-classes 10 on jx_vit_base_p16_224-80ecf9dd.pth (vit_b),
    #   deit_small_patch16_224-cd65a155.pth (deit_s), swin_base_patch4_window7_224_22kto1k.pth (swin_b),
    #   --output <model>_imagenette_init.msgpack
    tfds build imagenet2012          # needs the ILSVRC2012 archives in the manual dir
    tfds build imagenette --config full-size   # for :imagenette
    python main.py --config configs/imagenet_vit_at.py --workdir runs/in_vit_b_at_ardprm            # ViT-B
    python main.py --config configs/imagenet_vit_at.py:swin_b --workdir runs/in_swin_b_at_ardprm     # Swin-B
    python main.py --config configs/imagenet_vit_at.py:swin_b,plain --workdir runs/in_swin_b_at      # baseline
    python main.py --config configs/imagenet_vit_at.py:imagenette,deit_s --workdir runs/inette_deit_s_at_ardprm
    python main.py --config configs/imagenet_vit_at.py:smoke --workdir /tmp/smoke   # CPU, fake data, seconds

Args (comma-separated): model `vit_b` (default), `deit_s` or `swin_b`; `imagenette` (TFDS imagenette/full-size:
the original 12,894 / 500 split the reference downloads, 10 classes); method `trades` or `mart` (default PGD-AT;
the reference's ImageNet script trains PGD-AT only, its Imagenette script all three); `plain` turns ARD and PRM
off (the reference's "vanilla" runs); `smoke` (2 steps on fake 32 px data with a 2-block ViT / 2-stage Swin).

Recipe (train_imagenet.py / train_imagenette.py and their parsers' defaults):
  ImageNet: 10 epochs, batch 512, Linf eps 4/255, PGD-5 step 1/255, n_w = keep_warmup_epochs 2, lr x0.1 from
  epoch 5 and x0.01 from epoch 8; Imagenette: 40 epochs, batch 64, eps 8/255, PGD-10 step 2/255, n_w 10,
  lr x0.1 from epoch 35, x0.01 from 38. Both: SGD lr 0.1, momentum 0.9 (Swin: 0.5, as the reference sets for
  every Swin), wd 1e-4 on every parameter, gradient clipping at global norm 1.0, no warm-up; attack in eval
  mode (uniform start; TRADES/MART: x + 0.001 N(0,I), beta 6); ARD + PRM with keep_max 1 fading out over n_w
  epochs, PRM on a 16 px grid (the model's patch for ViT/DeiT, set to 16 for Swin whose patch is 4); no drop
  path (ViTs as the reference; its Swin-B has 0.1, see below); 224 px, the model normalising with the
  ImageNet mean/std. Evaluation as the reference: clean, PGD-20, PGD-100, CW-20 (step 1/255 on ImageNet,
  2/255 on Imagenette) and AutoAttack standard; on the first 5,000 ImageNet validation images (RobustBench's
  budget; RobustBench uses its own fixed list of 5,000) or all 500 Imagenette validation images.
Differences, documented: the reference trains on Resize(224x224) + RandomCrop(224, pad 4) + flip; the data
pipeline here has no resize-then-pad-crop augmentation for variable-size images, so training uses the Inception
crop (8-100% area) + flip; evaluation resizes to 224x224 as the reference does (`resize`). PGD-AT mixes
batches as the reference with timm's Mixup (mixup 0.8 / cutmix 1.0 on 30% of the batches, cutmix with
probability 0.5; pairs by a random permutation where timm reverses the batch). Swin-B trains with the reference's drop path 0.1. Its PGD/CW evaluation stops at misclassified
points and clamps the CW margin at -10; ours runs every step on every point.
Published (RobustBench, ImageNet Linf 4/255, AutoAttack, the reference's released ARD+PRM models):
Swin-B 74.66% clean / 38.30% AutoAttack, ViT-B 68.38% clean / 34.40% AutoAttack.
Not run here (no accelerator, no ImageNet).
"""
import ml_collections

from configs import common
from configs.cifar10_vit_at import METHODS, SMOKE_VIT, one_of, reference_optim, vit_at_method

MODELS = {  # arg: registry name
    "vit_b": "vit_b16",
    "deit_s": "vit_s16",
    "swin_b": "swin_base_patch4_window7_224",
}
ARGS = tuple(MODELS) + ("imagenette",) + METHODS + ("plain", "smoke")
SMOKE_SWIN = {"image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": (2, 2), "num_heads": (1, 2),
              "window_size": 4}


def get_config(arg=None):
    args = common.parse_args(arg, ARGS, config=__name__)
    model = one_of(args, tuple(MODELS), "vit_b", config=__name__)
    method = one_of(args, METHODS, "pgd_at", config=__name__)
    imagenette = "imagenette" in args
    swin = model == "swin_b"
    c = common.base()
    if imagenette:
        common.imagenet(c, name="imagenette/full-size", num_classes=10, train_augment="inception_crop",
                        eval_preprocess="resize", shuffle_buffer=12_894, cache=True)
        epochs, batch, eps, step, steps, n_w, n_train = 40, 64, 8 / 255, 2 / 255, 10, 10, 12_894
        init = f"{model}_imagenette_init.msgpack"
    else:
        common.imagenet(c, train_augment="inception_crop", eval_preprocess="resize")
        epochs, batch, eps, step, steps, n_w, n_train = 10, 512, 4 / 255, 1 / 255, 5, 2, 1_281_167
        init = f"{model}_in1k_init.msgpack"
    kwargs = {"drop_path_rate": 0.1} if swin else {}  # the reference's Swin-B drop path
    c.model.update(name=MODELS[model], init_from=init, kwargs=ml_collections.ConfigDict(kwargs))
    vit_at_method(c, method, eps=eps, step_size=step, steps=steps, ard_prm="plain" not in args,
                  keep_warmup_epochs=n_w, prm_patch=16 if swin else 0)
    reference_optim(c, epochs=epochs, momentum=0.5 if swin else 0.9)
    spe = n_train // batch  # ImageNet 2502, Imagenette 201 steps per epoch
    c.train.update(batch_size=batch, epochs=epochs, log_every=100 if not imagenette else 50,
                   eval_every=spe if not imagenette else 5 * spe, eval_suite="clean,pgd-10",
                   eval_examples=1000 if not imagenette else 500, checkpoint_every=1000 if not imagenette else spe)
    c.eval.update(batch_size=250, num_examples=0 if imagenette else 5000, norm="linf", eps=eps, step_size=step,
                  suite="clean,pgd-20,pgd-100,cw-20,autoattack", curve_eps=(),
                  autoattack=dict(version="standard", norm="linf", eps=eps, seed=0, batch_size=250))
    if "smoke" in args:
        common.smoke(c, image="32x32x3", num_classes=10 if imagenette else 1000,
                     model_kwargs=SMOKE_SWIN if swin else SMOKE_VIT)
        c.model.update(name="swin" if swin else "vit", init_from="")
        c.data.update(image_size=32, eval_split="test")
    return common.lock(c)
