"""AutoAttack parity and speed: robust_jax's AutoAttack vs `pyautoattack` on the same CIFAR-10 images and
the same weights (AutoAttack's example ResNet-18, `pyautoattack/examples/model_test.pt`, converted to Flax).

    python benchmarks/autoattack_parity.py [--n 100] [--norm Linf|L2] [--eps E] [--version standard|plus]
        [--data ../shared/data/cifar10_subset.npz] [--warm]

Prints the clean and per-attack robust accuracy of both side by side, the points on which they disagree,
and both wall times with their ratio (pyautoattack / robust_jax, > 1: robust_jax faster). Our time
includes compiling; `--warm` runs ours a second time with the compiled attacks and reports that too.
Default eps: 1/255 (Linf), 0.1 (L2). The data file holds `x_test` uint8 NHWC and `y_test`; the
`--n` test images are spread evenly over the file (every k-th: cifar10_subset.npz is sorted by class).
"""
from __future__ import annotations

import importlib.resources
import logging
import os
import re
import time

import _common as C

DEFAULT_DATA = os.path.join(C.ROOT, "..", "shared", "data", "cifar10_subset.npz")
DEFAULT_EPS = {"Linf": 1 / 255, "L2": 0.1}


def _args():
    def extra(p):
        p.add_argument("--data", default=DEFAULT_DATA, help="npz with x_test (uint8 NHWC) and y_test")
        p.add_argument("--n", type=int, default=100, help="number of test images")
        p.add_argument("--norm", choices=["Linf", "L2"], default="Linf")
        p.add_argument("--eps", type=float, default=None, help="default 1/255 (Linf), 0.1 (L2)")
        p.add_argument("--version", choices=["standard", "plus"], default="standard")
        p.add_argument("--batch-size", type=int, default=500)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--warm", action="store_true", help="also time a second run of ours (compiled)")
    args = C.parse_args(__doc__, extra)
    args.eps = DEFAULT_EPS[args.norm] if args.eps is None else args.eps
    return args


def load_data(path, n):
    import numpy as np

    if not os.path.exists(path):
        raise SystemExit(f"data file {path} not found; pass --data PATH (npz with x_test uint8 NHWC, y_test)")
    d = np.load(path)
    idx = np.arange(n) * max(1, len(d["y_test"]) // n)  # spread: the subset file is sorted by class
    return (d["x_test"][idx].astype(np.float32) / 255.0), d["y_test"][idx].astype(np.int32)


def load_models():
    """(torch net, flax apply_fn, flax variables) of AutoAttack's example ResNet-18."""
    from pyautoattack.examples.resnet import ResNet18
    from robust_jax import models
    from robust_jax.models import convert

    path = importlib.resources.files("pyautoattack") / "examples" / "model_test.pt"
    state_dict = convert.load_torch_checkpoint(str(path))
    net = ResNet18()
    net.load_state_dict(state_dict)
    model = models.get("resnet18", num_classes=10)
    variables = convert.convert_state_dict(state_dict, "resnet18", num_classes=10)
    return net.eval(), (lambda v, x: model.apply(v, x, train=False)), variables


def run_reference(net, x, y, args):
    """pyautoattack on contiguous NCHW tensors; per-attack robust accuracies read from its log."""
    import numpy as np
    import torch
    from pyautoattack import AutoAttack as TorchAutoAttack

    aa = TorchAutoAttack(net, norm=args.norm, eps=args.eps, version=args.version, device="cpu", seed=args.seed)
    lines = []
    handler = logging.Handler()
    handler.emit = lambda rec: lines.append(rec.getMessage())
    aa.logger.addHandler(handler)
    aa.logger.setLevel(logging.DEBUG)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    t = time.perf_counter()
    _, y_adv = aa.run_standard_evaluation(xt, torch.from_numpy(y.astype(np.int64)), batch_size=args.batch_size)
    seconds = time.perf_counter() - t
    per = {}
    for line in lines:
        if m := re.match(r"initial accuracy: ([\d.]+)%", line):
            per["clean"] = float(m.group(1)) / 100
        if m := re.match(r"robust accuracy after ([A-Z-]+): ([\d.]+)%", line):
            per[m.group(1).lower()] = float(m.group(2)) / 100
    return per, y_adv.numpy() == y, seconds


def main():
    args = _args()
    import numpy as np
    import torch

    from robust_jax.attacks.autoattack import AutoAttack

    x, y = load_data(args.data, args.n)
    net, apply_fn, variables = load_models()
    aa = AutoAttack(apply_fn, norm=args.norm, eps=args.eps, version=args.version, seed=args.seed,
                    batch_size=args.batch_size, log=lambda m: print("[robust_jax]", m, flush=True), progress=False)
    t = time.perf_counter()
    ours = aa.run(variables, x, y)
    ours_s = time.perf_counter() - t
    warm_s = None
    if args.warm:
        t = time.perf_counter()
        aa.run(variables, x, y)
        warm_s = time.perf_counter() - t
    ref_per, ref_robust, ref_s = run_reference(net, x, y, args)

    ours_per = {"clean": ours.clean_accuracy, **ours.per_attack}
    rows = [[k, f"{100 * ours_per.get(k, float('nan')):.1f}", f"{100 * ref_per.get(k, float('nan')):.1f}",
             f"{100 * (ours_per.get(k, float('nan')) - ref_per.get(k, float('nan'))):+.1f}",
             f"{ours.attack_seconds.get(k, 0.0):.1f}" if k != "clean" else ""]
            for k in dict.fromkeys(list(ours_per) + list(ref_per))]
    print(C.environment())
    print(f"AutoAttack {args.version}, {args.norm} eps {args.eps:.5g}, AutoAttack's ResNet-18 (model_test.pt), "
          f"{len(x)} CIFAR-10 test images spread over {os.path.basename(args.data)}, seed {args.seed}")
    print(C.table(rows, ["accuracy after", "robust_jax %", "pyautoattack %", "diff (points)", "robust_jax s"]))
    disagree = int(np.sum(ours.robust != ref_robust))
    print(f"final robust: robust_jax {ours.robust_accuracy:.2%}, pyautoattack {ref_robust.mean():.2%}; "
          f"points judged differently: {disagree} of {len(x)}")
    print(f"time: robust_jax {ours_s:.1f} s (incl. compile)" + (f", {warm_s:.1f} s warm" if warm_s else "")
          + f"; pyautoattack {ref_s:.1f} s ({torch.get_num_threads()} threads)")
    print(f"RATIO robust_jax speed / pyautoattack = {ref_s / ours_s:.2f}x (incl. compile)"
          + (f", {ref_s / warm_s:.2f}x (warm)" if warm_s else ""))


if __name__ == "__main__":
    main()
