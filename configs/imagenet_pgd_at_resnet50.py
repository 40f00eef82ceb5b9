"""PGD-AT on ImageNet with ResNet-50 (torchvision layout), Linf eps 4/255.

    tfds build imagenet2012     # needs the ILSVRC2012 archives in the manual dir (see the TFDS catalog)
    python main.py --config configs/imagenet_pgd_at_resnet50.py --workdir runs/in_pgd_at_r50
    python main.py --config configs/imagenet_pgd_at_resnet50.py:smoke --workdir /tmp/smoke   # CPU, fake data

PGD-3 with step 2.5 * eps / 3 and random start (our choice, the `robustness` library's convention), attack on
the model in eval mode; SGD lr 0.1 x batch/256, momentum 0.9, wd 1e-4, batch 512, 90 epochs with lr x0.1 at
30 and 60; inception crop 224 + flip for training, resize 256 + center crop 224 for evaluation.
Reference point (Salman et al. 2020, ResNet-50, eps 4/255): clean 64.02%, AutoAttack 34.96% (RobustBench).
Not run here (no accelerator, no ImageNet).
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, ('smoke',), config=__name__)
    c = common.base()
    common.imagenet(c)
    c.model.name = "resnet50"
    c.method.name = "pgd_at"
    eps = 4 / 255
    c.method.attack = common.attack(eps=eps, step_size=2.5 * eps / 3, steps=3, random_start="uniform", train_mode=False)
    batch = 512
    c.optim.update(name="sgd", lr=0.1 * batch / 256, momentum=0.9, weight_decay=1e-4, schedule="piecewise",
                   decay_epochs=(30, 60), decay_factor=0.1)
    c.train.update(batch_size=batch, epochs=90, log_every=100, eval_every=2500, eval_suite="clean,pgd-10",
                   eval_examples=5000, checkpoint_every=1000)
    c.eval.update(batch_size=500, eps=eps, step_size=1 / 255, num_examples=5000, suite="clean,pgd-20,cw-20")
    if "smoke" in args:
        common.smoke(c, image="64x64x3", num_classes=1000, model_kwargs={"stage_sizes": (1, 1, 1, 1), "width": 16})
        c.data.update(eval_split="test", image_size=56)
    return common.lock(c)
