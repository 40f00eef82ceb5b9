"""TRADES on CIFAR-10 with WideResNet-34-10 (Zhang et al. 2019; the reference training script).

    tfds build cifar10
    python main.py --config configs/cifar10_trades.py --workdir runs/cifar10_trades
    python main.py --config configs/cifar10_trades.py:smoke --workdir /tmp/smoke   # CPU, fake data

beta 6; attack: 10 steps of sign ascent on KL(p(x) || p(x')) with step 0.007 inside Linf eps 0.031, from
x + 0.001 N(0, I), model in eval mode; SGD lr 0.1, momentum 0.9, wd 2e-4, batch 128, 76 epochs with lr x0.1
at epoch 75 (the reference schedule); random crop (pad 4) + flip.
Published (WRN-34-10): clean 84.92%, AutoAttack 53.08% (RobustBench `Zhang2019Theoretically`).
Not run here (no GPU).
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, ('smoke',), config=__name__)
    c = common.base()
    c.data.update(name="cifar10", num_classes=10, image_size=32, train_augment="crop_flip", crop_padding=4)
    # The reference feeds raw [0,1] pixels to the network (no normalisation layer).
    c.model.update(name="wrn34_10", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    c.method.update(name="trades", beta=6.0)
    c.method.attack = common.attack(eps=0.031, step_size=0.007, steps=10, random_start="normal", train_mode=False)
    c.optim.update(name="sgd", lr=0.1, momentum=0.9, weight_decay=2e-4, schedule="piecewise",
                   decay_epochs=(75,), decay_factor=0.1)
    c.train.update(batch_size=128, epochs=76, log_every=100, eval_every=3910, eval_suite="clean,pgd-10",
                   eval_examples=1000, checkpoint_every=1955)
    c.eval.update(batch_size=500, eps=8 / 255, step_size=2 / 255, suite="clean,pgd-20,cw-20")
    if "smoke" in args:
        common.smoke(c, image="32x32x3", model_kwargs={"depth": 10, "widen_factor": 1})
        c.model.name = "wrn"
    return common.lock(c)
