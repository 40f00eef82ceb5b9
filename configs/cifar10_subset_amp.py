"""Adversarially optimised mixup (AMP, our reconstruction: docs/amp.md) on the 5,000-image CIFAR-10 subset, with
the data, small CNN, optimiser, attack and budget of configs/cifar10_subset.py's PGD-AT row so the rows compare.

    python main.py --config configs/cifar10_subset_amp.py --workdir runs/cifar10_subset_amp
    python main.py --config configs/cifar10_subset_amp.py:mixup --workdir runs/cifar10_subset_mixup

Args as configs/digits_amp.py: 'lambda', 'geometric', 'mixed_point', 'mixup' (plain mixup baseline), 'smoke'.
Measured here (seed 0, 2 shared CPU cores; 500 test images at eps 8/255; full table in docs/amp.md):
    AMP endpoints, lambda fixed:  clean 25.40%, PGD-20 20.00%, CW-20 17.00%, AutoAttack 15.40%, corruptions 22.84%
    plain mixup (:mixup):         clean 41.80%, PGD-20  3.60%, CW-20  2.80%, AutoAttack  2.00%, corruptions 36.95%
    PGD-AT (configs/cifar10_subset.py): 31.20%, 21.20%, 15.80%, 14.40%, 27.57%
(corruptions: mean accuracy at CIFAR-10-C strengths, eval.corruptions.params=auto)
"""
from configs import cifar10_subset, common
from configs.digits_amp import ARGS, amp_variant


def get_config(arg=None):
    """configs/cifar10_subset.py's PGD-AT recipe (its smoke variant with 'smoke') with the method swapped."""
    args = common.parse_args(arg, ARGS, config=__name__)
    c = cifar10_subset.get_config("smoke" if "smoke" in args else None)
    amp_variant(c, args)
    return c
