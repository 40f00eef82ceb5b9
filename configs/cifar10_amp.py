"""Adversarially optimised mixup (AMP, our reconstruction: docs/amp.md) on CIFAR-10 with PreAct-ResNet-18, on
the PGD-AT recipe of Rice, Wong & Kolter (configs/cifar10_pgd_at.py) so the rows compare.

    tfds build cifar10                      # once, on a machine with internet
    python main.py --config configs/cifar10_amp.py --workdir runs/cifar10_amp                  # endpoints, lambda fixed
    python main.py --config configs/cifar10_amp.py:lambda,geometric --workdir runs/cifar10_amp_lg
    python main.py --config configs/cifar10_amp.py:mixup --workdir runs/cifar10_mixup          # plain mixup baseline
    python main.py --config configs/cifar10_amp.py:smoke --workdir /tmp/smoke   # CPU, fake data, seconds

Linf eps 8/255, 10 steps of 2/255 on both endpoints from uniform starts, attack on the model in train mode;
alpha 1; SGD lr 0.1, momentum 0.9, wd 5e-4, batch 128, 200 epochs, lr x0.1 at epochs 100 and 150; random
crop (pad 4) + flip; evaluated with PGD-20 / CW-20 (step 2/255) on the 10,000 test images.
Args as configs/digits_amp.py: 'lambda', 'geometric', 'mixed_point', 'mixup', 'smoke'.
Expected: unknown. The paper reports CIFAR-10 results against AutoAttack, but its numbers, settings and code
are not available to us; this recipe is our reconstruction and has not been run here (no GPU). For reference,
the PGD-AT recipe reaches about 53% PGD-20 / 82-84% clean at its best checkpoint (Rice et al. 2020).
"""
from configs import cifar10_pgd_at, common
from configs.digits_amp import ARGS, amp_variant


def get_config(arg=None):
    """configs/cifar10_pgd_at.py's recipe (its smoke variant with 'smoke') with the method swapped."""
    args = common.parse_args(arg, ARGS, config=__name__)
    c = cifar10_pgd_at.get_config("smoke" if "smoke" in args else None)
    amp_variant(c, args)
    return c
