"""PGD adversarial training of the small CNN on 5,000 real CIFAR-10 images (an npz subset): the CIFAR analogue
of configs/default.py, small enough to finish in minutes on 2 CPU cores, the baseline the CIFAR-subset rows of
other methods (configs/cifar10_subset_amp.py) compare with.

    python main.py --config configs/cifar10_subset.py --workdir runs/cifar10_subset
    python main.py --config configs/cifar10_subset.py:standard --workdir runs/cifar10_subset_standard

Data: any npz with x_train/y_train, x_test/y_test (uint8 NHWC 32x32x3, 10 classes; `--config.data.name=npz:PATH`);
the default is ../shared/data/cifar10_subset.npz (5,000 train, 1,000 test images), run from the repository
root. Small CNN (widths 16/32/64), Linf eps 8/255, PGD-10 training with step 2/255 (attack in eval mode, as
configs/default.py), SGD lr 0.1 momentum 0.9 wd 5e-4, cosine with 1 warm-up epoch, batch 64, 10 epochs (780
steps), random crop (pad 4) + flip; evaluated on 500 of the 1,000 test images (every other one; the file is
sorted by class) with PGD-20 / CW-20 (step 2/255).
Measured here (seed 0, 2 CPU cores shared with other jobs; 7-10 min of training; eval suite overridden with
`--config.eval.suite=clean,pgd-20,cw-20,autoattack,corruptions`):
    PGD-AT:    clean 31.20%, PGD-20 21.20%, CW-20 15.80%, AutoAttack 14.40%, mean corruption accuracy 27.57%
    (corruptions at CIFAR-10-C strengths, eval.corruptions.params=auto; 23.68% with ImageNet-C strengths)
Args: 'standard' trains without attack; 'smoke' runs a few steps on fake data (seconds, for tests).
"""
import ml_collections

from configs import common

SUBSET = "npz:../shared/data/cifar10_subset.npz"


def get_config(arg=None):
    args = common.parse_args(arg, ("standard", "smoke"), config=__name__)
    c = common.base()
    c.data.update(name=SUBSET, num_classes=10, image_size=32, train_augment="crop_flip", crop_padding=4,
                  eval_subset="spread")
    c.model.update(name="small_cnn", mean=common.CIFAR10_MEAN, std=common.CIFAR10_STD,
                   kwargs=ml_collections.ConfigDict(dict(widths=(16, 32, 64))))
    c.method.name = "standard" if "standard" in args else "pgd_at"
    c.method.attack = common.attack(eps=8 / 255, step_size=2 / 255, steps=10, train_mode=False)
    c.optim.update(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine", warmup_epochs=1.0)
    c.train.update(batch_size=64, epochs=10, log_every=39, eval_every=390, eval_suite="clean,pgd-10",
                   eval_examples=500)
    c.eval.update(batch_size=250, num_examples=500, eps=8 / 255, step_size=2 / 255, suite="clean,pgd-20,cw-20",
                  curve_eps=(0.0, 2 / 255, 4 / 255, 8 / 255, 12 / 255))
    if "smoke" in args:
        common.smoke(c, image="32x32x3")
    return common.lock(c)
