"""PGD-AT on CIFAR-10 with PreAct-ResNet-18: the recipe of Rice, Wong & Kolter (2020).

    tfds build cifar10                      # once, on a machine with internet
    python main.py --config configs/cifar10_pgd_at.py --workdir runs/cifar10_pgd_at
    python main.py --config configs/cifar10_pgd_at.py:smoke --workdir /tmp/smoke   # CPU, fake data, seconds

Linf eps 8/255, PGD-10 with step 2/255 and uniform random start, attack on the model in train mode (as the
reference); SGD lr 0.1, momentum 0.9, wd 5e-4, batch 128, 200 epochs, lr x0.1 at epochs 100 and 150;
random crop (pad 4) + flip. Evaluated with PGD-20 and CW-20 (step 2/255) on the 10,000 test images.
Published (Rice et al. 2020, PreAct-ResNet-18): robust accuracy about 53% at the best checkpoint and about
46% at the end of training (robust overfitting), clean accuracy about 82-84%. Not run here (no GPU).
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, ('smoke',), config=__name__)
    c = common.base()
    c.data.update(name="cifar10", num_classes=10, image_size=32, train_augment="crop_flip", crop_padding=4)
    c.model.update(name="preact_resnet18", mean=common.CIFAR10_MEAN, std=common.CIFAR10_STD)
    c.method.name = "pgd_at"
    c.method.attack = common.attack(eps=8 / 255, step_size=2 / 255, steps=10, random_start="uniform", train_mode=True)
    c.optim.update(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="piecewise",
                   decay_epochs=(100, 150), decay_factor=0.1)
    c.train.update(batch_size=128, epochs=200, log_every=100, eval_every=3910, eval_suite="clean,pgd-10",
                   eval_examples=1000, checkpoint_every=1955)
    c.eval.update(batch_size=500, eps=8 / 255, step_size=2 / 255, suite="clean,pgd-20,cw-20",
                  curve_eps=(0.0, 2 / 255, 4 / 255, 8 / 255, 12 / 255, 16 / 255))
    if "smoke" in args:
        common.smoke(c, image="32x32x3", model_kwargs={"width": 16})
    return common.lock(c)
