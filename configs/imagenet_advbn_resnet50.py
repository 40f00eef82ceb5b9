"""AdvBN fine-tuning of torchvision's ResNet-50 on ImageNet (Shu et al., NeurIPS 2021; azshue/AdvBN).

    # torchvision ResNet-50 V1 weights (resnet50-0676ba61.pth, 76.13% top-1) -> our variables (single BN;
    # the run copies each BN into the clean and adv sets; --dual-bn writes the dual file directly):
    robust-jax-convert --model resnet50 --num-classes 1000 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \
        --input resnet50-0676ba61.pth --output weights/resnet50_tv_v1.msgpack
    tfds build imagenet2012          # needs the ILSVRC2012 archives in the manual dir
    python main.py --config configs/imagenet_advbn_resnet50.py --workdir runs/in_advbn_r50
    python main.py --config configs/imagenet_advbn_resnet50.py:smoke --workdir /tmp/smoke   # CPU, fake data

The reference recipe: AdvBN after layer1 (cut 1, 256 channels), statistics and factors per group of 64
images (the reference's per-GPU batch at 4 x 64), 6 sign-ascent steps of 0.2 in the box [-0.1, 2.1], model in
eval mode during the attack; loss = CE(adv head, adv BNs) + CE(clean head, clean BNs); the front (stem +
layer1) frozen in eval mode; only the head trained: SGD lr 1e-3, momentum 0.9, wd 1e-4, x0.1 after 10 of 20
epochs, global batch 256, head BNs synchronised; RandomResizedCrop 224 + flip; the model evaluated is the
epoch with the best clean-BN ImageNet val top-1 (train.select_best, as the reference selects it).
Evaluation, BN set per data set as the reference's test script: ImageNet val (resize 256 + crop 224) clean;
ImageNet-C (TFDS imagenet2012_corrupted, center crop 224) clean; Stylized-ImageNet val (center crop 224) and
ImageNet-Sketch (resize 256 + crop 224) adv; ImageNet-Instagram (resize 256 + crop 224; mean top-1 over its
20 filter folders, PATH/<filter>/<wnid>/*) clean. Set the
imagefolder paths of the sets you have (`--config.eval.shift_sets.stylized.source=imagefolder:/data/sin`).
Published (reference README, ResNet-50): standard 76.1 / mCE 76.7 / Instagram 67.2 / Sketch 24.1 /
Stylized 7.4; AdvBN 77.0 / 72.7 / 69.5 / 27.9 / 11.9. Not run here (no accelerator, no ImageNet).
Args: 'smoke' runs two steps of the same method on fake data with a small random dual-BN ResNet.
"""
import ml_collections

from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, ('smoke',), config=__name__)
    c = common.base()
    common.imagenet(c)
    c.model.update(name="resnet50", init_from="weights/resnet50_tv_v1.msgpack", bn="sync",
                   kwargs=ml_collections.ConfigDict(dict(dual_bn=True)))
    c.method.name = "advbn"
    c.method.advbn.update(cut=1, group_size=64, clamp=True, steps=6, step_size=0.2, eps=1.1)
    c.optim.update(name="sgd", lr=1e-3, momentum=0.9, weight_decay=1e-4, schedule="piecewise", decay_epochs=(10,),
                   decay_factor=0.1)
    # model selection as the reference: clean-BN top-1 on all of ImageNet val after every epoch (5,004 steps)
    c.train.update(batch_size=256, epochs=20, log_every=100, eval_every=5004, eval_suite="clean",
                   eval_examples=0, checkpoint_every=1000, select_best="clean")
    c.eval.update(batch_size=250, suite="clean,corrupted_tfds,shift_sets", bn="clean")
    c.eval.corruptions.update(tfds_preprocess="center_crop")
    c.eval.shift_sets = ml_collections.ConfigDict(dict(
        stylized=dict(source="imagefolder:stylized_imagenet", split="val", labels="wnid", preprocess="center_crop",
                      bn="adv"),
        sketch=dict(source="imagenet_sketch", split="test", bn="adv"),
        instagram=dict(source="imagefolder:imagenet_instagram", splits="*", labels="wnid", bn="clean")))
    if "smoke" in args:
        common.smoke(c, image="64x64x3", num_classes=1000,
                     model_kwargs={"stage_sizes": (1, 1, 1, 1), "width": 16, "dual_bn": True})
        c.model.init_from = ""
        c.method.advbn.update(group_size=4, steps=2)
        c.data.update(eval_split="test", image_size=56)
        c.train.update(eval_every=1, eval_examples=8)
    return common.lock(c)
