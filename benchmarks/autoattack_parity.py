"""AutoAttack parity and speed: robust_jax's AutoAttack vs `pyautoattack` on the same images and the same
weights, either AutoAttack's example CIFAR-10 ResNet-18 (`pyautoattack/examples/model_test.pt`, converted to
Flax) or the tests' small twin CNN (tests/twin.py: trained on the embedded digits, copied into PyTorch).

    python benchmarks/autoattack_parity.py [--model resnet18|twin|twin-plain-conv] [--n 100] [--norm Linf|L2] [--eps E]
        [--version standard|plus] [--data ../shared/data/cifar10_subset.npz] [--warm] [--cache-dir DIR]
        [--no-reference]

Prints the clean and per-attack robust accuracy of both side by side, the points on which they disagree,
per-attack seconds of both sides, both wall times with their ratio (pyautoattack / robust_jax, > 1:
robust_jax faster), our compile seconds (tracing, lowering and XLA compiles, from jax.monitoring) per attack
with the number of programs loaded from the persistent cache, and our padding share (points run including
bucket padding / points attacked - 1). Our time includes compiling; `--warm` runs ours a second time with
the compiled attacks and reports that too; `--cache-dir` turns on JAX's persistent compilation cache in that
directory (a second process then loads the compiled programs instead of compiling them).
ResNet-18: default eps 1/255 (Linf), 0.1 (L2); the data file holds `x_test` uint8 NHWC and `y_test`; the `--n`
test images are spread evenly over the file (every k-th: cifar10_subset.npz is sorted by class).
Twin: the first `--n` held-out digits (16x16x3), default eps 0.03 (Linf), 0.5 (L2), as tests/test_autoattack.py;
`twin` runs its convs through the library's `models.layers.conv_general_dilated` as every robust_jax model
does, `twin-plain-conv` through flax's plain nn.Conv (a user's own model: XLA:CPU then runs the input
gradients inside attack loops on its slow generic path, see models/layers.py).
On a loaded machine pass `--torch-threads 1`: torch's default threads then wait on each other (the reference
took 1,048 s instead of 22 s on the twin with 2 threads under a load average of 5).
"""
from __future__ import annotations

import importlib.resources
import logging
import os
import re
import sys
import time

import _common as C

DEFAULT_DATA = os.path.join(C.ROOT, "..", "shared", "data", "cifar10_subset.npz")
DEFAULT_EPS = {"resnet18": {"Linf": 1 / 255, "L2": 0.1}, "twin": {"Linf": 0.03, "L2": 0.5},
               "twin-plain-conv": {"Linf": 0.03, "L2": 0.5}}
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def _args():
    def extra(p):
        p.add_argument("--model", choices=["resnet18", "twin", "twin-plain-conv"], default="resnet18")
        p.add_argument("--data", default=DEFAULT_DATA, help="npz with x_test (uint8 NHWC) and y_test (resnet18)")
        p.add_argument("--n", type=int, default=100, help="number of test images")
        p.add_argument("--norm", choices=["Linf", "L2"], default="Linf")
        p.add_argument("--eps", type=float, default=None, help="resnet18: 1/255 (Linf), 0.1 (L2); twin: 0.03, 0.5")
        p.add_argument("--version", choices=["standard", "plus"], default="standard")
        p.add_argument("--batch-size", type=int, default=500)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--warm", action="store_true", help="also time a second run of ours (compiled)")
        p.add_argument("--cache-dir", default=None, help="JAX persistent compilation cache directory")
        p.add_argument("--no-reference", action="store_true", help="ours only (compile and cache checks)")
        p.add_argument("--torch-threads", type=int, default=None,
                       help="torch's intra-op threads (default: torch's own); on a loaded machine 1 avoids "
                            "OpenMP threads waiting on each other")
    args = C.parse_args(__doc__, extra)
    args.eps = DEFAULT_EPS[args.model][args.norm] if args.eps is None else args.eps
    return args


def load_data(path, n):
    import numpy as np

    if not os.path.exists(path):
        raise SystemExit(f"data file {path} not found; pass --data PATH (npz with x_test uint8 NHWC, y_test)")
    d = np.load(path)
    idx = np.arange(n) * max(1, len(d["y_test"]) // n)  # spread: the subset file is sorted by class
    return (d["x_test"][idx].astype(np.float32) / 255.0), d["y_test"][idx].astype(np.int32)


def load_twin(n, plain_conv=False):
    """(torch net, flax apply_fn, flax params, x, y): the tests' twin CNN on n held-out digits. Its convs run
    through `robust_jax.models.layers.conv_general_dilated`, as every robust_jax model's do (same values;
    input gradients inside attack loops on XLA:CPU's fast path), unless `plain_conv` (`lax`'s conv, as in
    flax's nn.Conv: what a user's own model gets)."""
    sys.path.insert(0, os.path.join(C.ROOT, "tests"))
    import jax
    from twin import FlaxTwin, digits_test_points, torch_twin, trained_twin

    _, params = trained_twin()
    model = FlaxTwin(conv_general_dilated=jax.lax.conv_general_dilated) if plain_conv else FlaxTwin()
    apply_fn = lambda p, xb: model.apply({"params": p}, xb)  # noqa: E731
    x, y = digits_test_points(n)
    return torch_twin(params), apply_fn, params, x, y


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
    """pyautoattack on contiguous NCHW tensors: per-attack robust accuracies and seconds read from its log."""
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
    per, per_s, total = {}, {}, 0.0
    for line in lines:
        if m := re.match(r"initial accuracy: ([\d.]+)%", line):
            per["clean"] = float(m.group(1)) / 100
        if m := re.match(r"robust accuracy after ([A-Z-]+): ([\d.]+)% \(total time ([\d.]+) s\)", line):
            per[m.group(1).lower()] = float(m.group(2)) / 100
            per_s[m.group(1).lower()] = float(m.group(3)) - total  # the log gives the running total
            total = float(m.group(3))
    return per, per_s, y_adv.numpy() == y, seconds


class CompileClock:
    """Sums jax's compile-duration events (trace, lowering, XLA compile) and counts XLA compiles, attributed
    to the attack running when they happen (the attack's end is read from AutoAttack's log), and counts the
    programs loaded from the persistent compilation cache (each also counts as an XLA compile)."""

    def __init__(self):
        import jax.monitoring

        self.events, self.marks, self.on, self.cache_hits = [], [], False, 0
        jax.monitoring.register_event_duration_secs_listener(self._event)
        jax.monitoring.register_event_listener(self._count)

    def _event(self, name, secs, **_):
        if self.on and name in COMPILE_EVENTS:
            self.events.append((time.perf_counter(), name, secs))

    def _count(self, name, **_):
        if self.on and name == CACHE_HIT_EVENT:
            self.cache_hits += 1

    def log(self, msg):
        print("[robust_jax]", msg, flush=True)
        if msg.startswith("initial accuracy"):
            self.marks.append((time.perf_counter(), "setup"))
        if m := re.match(r"robust accuracy after ([A-Z-]+):", msg):
            self.marks.append((time.perf_counter(), m.group(1).lower()))

    def per_attack(self):
        """{attack or 'setup': (compile seconds, XLA compiles)}; 'setup': checks and the clean prediction."""
        out, ends = {}, self.marks + [(float("inf"), "after")]
        for t, name, secs in self.events:
            where = next((a for end, a in ends if t <= end), "after")
            s, n = out.get(where, (0.0, 0))
            out[where] = (s + secs, n + (name == COMPILE_EVENTS[-1]))
        return out


def main():
    args = _args()
    import numpy as np
    import torch

    import jax
    from robust_jax.attacks.autoattack import AutoAttack

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    if args.cache_dir:  # process-wide: the benchmark's own choice, not the library's
        jax.config.update("jax_compilation_cache_dir", args.cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if args.model.startswith("twin"):
        net, apply_fn, variables, x, y = load_twin(args.n, plain_conv=args.model == "twin-plain-conv")
        what = (f"the tests' twin CNN ({'flax nn.Conv' if args.model == 'twin-plain-conv' else 'library conv'}), "
                f"{len(x)} held-out digits")
    else:
        x, y = load_data(args.data, args.n)
        net, apply_fn, variables = load_models()
        what = (f"AutoAttack's ResNet-18 (model_test.pt), {len(x)} CIFAR-10 test images spread over "
                f"{os.path.basename(args.data)}")
    clock = CompileClock()
    aa = AutoAttack(apply_fn, norm=args.norm, eps=args.eps, version=args.version, seed=args.seed,
                    batch_size=args.batch_size, log=clock.log, progress=False)
    clock.on = True
    t = time.perf_counter()
    ours = aa.run(variables, x, y)
    ours_s = time.perf_counter() - t
    clock.on = False
    compiles = clock.per_attack()
    warm_s = warm = None
    if args.warm:
        t = time.perf_counter()
        warm = aa.run(variables, x, y)
        warm_s = time.perf_counter() - t
    if args.no_reference:
        ref_per, ref_per_s, ref_robust, ref_s = {}, {}, ours.robust, float("nan")
    else:
        ref_per, ref_per_s, ref_robust, ref_s = run_reference(net, x, y, args)

    ours_per = {"clean": ours.clean_accuracy, **ours.per_attack}
    nan = float("nan")
    rows = []
    for k in dict.fromkeys(list(ours_per) + list(ref_per)):
        real, run = ours.attack_points.get(k, (0, 0))
        rows.append([k, f"{100 * ours_per.get(k, nan):.1f}", f"{100 * ref_per.get(k, nan):.1f}",
                     f"{100 * (ours_per.get(k, nan) - ref_per.get(k, nan)):+.1f}"]
                    + ([""] * 6 if k == "clean" else
                       [f"{ours.attack_seconds.get(k, 0.0):.1f}",
                        f"{warm.attack_seconds.get(k, 0.0):.1f}" if warm else "-",
                        f"{ref_per_s.get(k, nan):.1f}", f"{compiles.get(k, (0.0, 0))[0]:.1f}",
                        str(compiles.get(k, (0.0, 0))[1]), f"{real}/{run}"]))
    print(C.environment())
    print(f"AutoAttack {args.version}, {args.norm} eps {args.eps:.5g}, {what}, seed {args.seed}")
    print(C.table(rows, ["accuracy after", "robust_jax %", "pyautoattack %", "diff (points)", "robust_jax s",
                         "warm s", "pyautoattack s", "compile s", "compiles", "points/padded"]))
    total_c = sum(s for s, _ in compiles.values())
    n_c = sum(n for _, n in compiles.values())
    real = sum(r for r, _ in ours.attack_points.values())
    run = sum(p for _, p in ours.attack_points.values())
    disagree = int(np.sum(ours.robust != ref_robust))
    print(f"final robust: robust_jax {ours.robust_accuracy:.2%}, pyautoattack {ref_robust.mean():.2%}; "
          f"points judged differently: {disagree} of {len(x)}")
    print(f"compile: {total_c:.1f} s in {n_c} XLA compiles or cache loads ({clock.cache_hits} from the persistent "
          f"cache; {100 * total_c / ours_s:.0f}% of our time; setup "
          f"{compiles.get('setup', (0.0, 0))[0]:.1f} s before the first attack, incl. the sanity checks)"
          if compiles else "compile: none recorded (all programs from the persistent cache or compiled before)")
    print(f"padding: {run} points run for {real} attacked (share {100 * (run / max(real, 1) - 1):.1f}% "
          f"extra; points x attack runs, summed over attacks and target ranks)")
    print(f"time: robust_jax {ours_s:.1f} s (incl. compile)" + (f", {warm_s:.1f} s warm" if warm_s else "")
          + f"; pyautoattack {ref_s:.1f} s ({torch.get_num_threads()} threads)")
    print(f"RATIO robust_jax speed / pyautoattack = {ref_s / ours_s:.2f}x (incl. compile)"
          + (f", {ref_s / warm_s:.2f}x (warm)" if warm_s else ""))


if __name__ == "__main__":
    main()
