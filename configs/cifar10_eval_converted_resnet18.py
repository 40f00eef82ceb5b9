"""Evaluate a CIFAR-10 ResNet-18 converted from PyTorch (pytorch-cifar layout, raw [0,1] inputs), e.g.
AutoAttack's example model shipped in the `pyautoattack` package (an undefended model):

    pip install -e .[parity]
    robust-jax-convert --model resnet18 --num-classes 10 --mean 0,0,0 --std 1,1,1 \\
        --input $(python -c "import importlib.resources as r; print(r.files('pyautoattack') / 'examples' / 'model_test.pt')") \\
        --output runs/resnet18_autoattack.msgpack
    python main.py --config configs/cifar10_eval_converted_resnet18.py --mode eval --workdir runs/eval_r18 \\
        --config.eval.checkpoint=runs/resnet18_autoattack.msgpack \\
        --config.data.name=npz:../shared/data/cifar10_subset.npz

Expected on the 1,000 test images of cifar10_subset.npz (measured here): clean 83.80%, the same as the
PyTorch model (83.8%); the model is undefended, so robust accuracy at Linf 1/255 is already low.

`:full` runs the evaluation suite clean, PGD-20 and AutoAttack (standard) at RobustBench's Linf 8/255, a PGD-20
accuracy-vs-eps curve (0.25/255 to 4/255), and the 15 benchmark common corruptions (on the fly, 5 severities:
mean corruption error and the heat-map) on 100 test images spread over the split (`data.eval_subset='spread'`:
every 10th of cifar10_subset.npz, which is sorted by class), saved per chunk of 50 (an interrupted run resumes):

    python main.py --config configs/cifar10_eval_converted_resnet18.py:full --mode eval --workdir runs/eval_r18_full \\
        --config.eval.checkpoint=runs/resnet18_autoattack.msgpack \\
        --config.data.name=npz:../shared/data/cifar10_subset.npz

Measured here (2 CPU cores, 2026-11-22, about 8 min in all): clean 80.00%, PGD-20 0.00%, AutoAttack 0.00%
(APGD-CE alone breaks every point; 158 s); PGD-20 curve 66 / 57 / 28 / 1 / 0% at eps 0.25 / 0.5 / 1 / 2 / 4
(/255); mean corruption error 66.71% over the 15 benchmark corruptions x 5 severities (elastic_transform,
gaussian/shot noise and defocus blur the hardest, brightness the easiest). The report's plots are the picture
in README.md (docs/images/report_example.png). The on-the-fly corruptions use ImageNet-C's severity parameters, not
CIFAR-10-C's: for numbers comparable with published CIFAR-10-C results use `corrupted_tfds`.

Without `--config.data.name` it reads TFDS `cifar10` (prepare with `tfds build cifar10`); `corrupted_tfds`
in the suite reads `cifar10_corrupted` (`tfds build cifar10_corrupted`). `:smoke` trains and evaluates a
narrow ResNet-18 on fake data for two steps (tests).
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, ('full', 'smoke'), config=__name__)
    c = common.base()
    c.data.update(name="cifar10", num_classes=10, image_size=32, train_augment="crop_flip")
    c.model.update(name="resnet18", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    c.method.name = "standard"
    # Clean accuracy by default (seconds on a CPU); add attacks with e.g. --config.eval.suite=clean,pgd-20,cw-20
    # (ResNet-18 PGD-20 on 1,000 images takes several minutes per attack on 2 CPU cores).
    c.eval.update(batch_size=500, eps=1 / 255, step_size=0.25 / 255, suite="clean", use_ema=False)
    if "full" in args:  # RobustBench's CIFAR-10 threat model (Linf 8/255) on 100 test images, 10 per class
        c.data.eval_subset = "spread"
        c.eval.update(suite="clean,pgd-20,autoattack,corruptions", eps=8 / 255, step_size=2 / 255, batch_size=50,
                      num_examples=100, chunk_size=50, curve_eps=tuple(e / 255 for e in (0.25, 0.5, 1, 2, 4)))
        c.eval.autoattack.update(version="standard", batch_size=50)
        c.eval.corruptions.update(names="benchmark", severities=(1, 2, 3, 4, 5))
    if "smoke" in args:
        common.smoke(c, image="32x32x3", model_kwargs={"width": 16})
    return common.lock(c)
