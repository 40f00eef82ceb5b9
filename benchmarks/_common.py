"""Shared by the benchmarks: our own PyTorch PreAct-ResNet-18 and PGD-AT step (the reference the ratios are
taken against), the JAX objects under test, and interleaved timing that reports medians and ratios.

Run from the repository root: `python benchmarks/<name>.py [--quick]`.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `configs` is a top-level package of the repository
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH, SIZE, CLASSES = 32, 32, 10
EPS, STEP_SIZE = 8 / 255, 2 / 255


def parse_args(description: str, extra=None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer repeats (a rough number in about a minute)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per contender (default 5, quick 2)")
    if extra:
        extra(p)
    args = p.parse_args()
    torch_before_tensorflow()
    if getattr(args, "plain_flax_conv", False):
        from robust_jax.models import layers

        layers.conv_general_dilated = None  # read when models are traced; nn.Conv then uses lax's conv
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    return args


def torch_before_tensorflow():
    """Imports torch._dynamo (which the first torch optimizer step imports, and with it triton) now: in this
    environment (TF 2.21, torch 2.14, triton 3.8) importing it after TensorFlow segfaults, the other order works.
    No benchmark loads TensorFlow today (`environment()` says), this keeps it so if one does."""
    import importlib.util

    if "tensorflow" not in sys.modules and importlib.util.find_spec("torch") is not None:
        import torch._dynamo  # noqa: F401


def environment() -> str:
    import jax
    import torch

    load = ", load average %.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores{load}; jax {jax.__version__} "
            f"({jax.devices()[0].platform}), torch {torch.__version__} ({torch.get_num_threads()} threads); "
            f"TensorFlow loaded: {'tensorflow' in sys.modules}")


# --- XLA compile options ----------------------------------------------------------------------------------
XLA_OPTIONS = {
    # What users get: the package's own options, robust_jax.compile_options.cpu_compiler_options() (on CPU with
    # jaxlib 0.10.2: "eigen-conv" and LLVM -O1 for XLA's own loops; off with ROBUST_JAX_XLA_CPU_FAST_CONV=0).
    # Resolved by xla_options().
    "default": None,
    # jaxlib's own default: convolutions in YNNPACK fusions (jaxlib 0.10.2's default list is individual_dot,
    # individual_convolution, reduce); what the package compiled before issue 17.
    "ynn-conv": {},
    # Convolutions on XLA:CPU's Eigen path instead of YNNPACK fusions, reductions and dots still on YNNPACK.
    # Same as XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution
    "eigen-conv": {"xla_cpu_experimental_ynn_fusion_type":
                   "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    # No YNNPACK at all: convolutions on Eigen, reductions on XLA's own loops (slow for BatchNorm statistics).
    "no-ynn": {"xla_cpu_experimental_ynn_fusion_type": ""},
}


def add_jax_options(extra=None):
    def add(p):
        p.add_argument("--xla-options", choices=sorted(XLA_OPTIONS), default="default",
                       help="per-compile XLA options for the robust_jax side (default: the package's own, "
                            "robust_jax.compile_options; ynn-conv: jaxlib's; see README)")
        p.add_argument("--plain-flax-conv", action="store_true",
                       help="models with flax's plain lax.conv_general_dilated: the state before the loop fix")
        if extra:
            extra(p)
    return add


def xla_options(name: str) -> dict:
    """The per-compile options of `--xla-options name` ("default": what the package compiles with)."""
    if XLA_OPTIONS[name] is None:
        from robust_jax import compile_options

        return compile_options.cpu_compiler_options()
    return XLA_OPTIONS[name]


def add_dtype(p):
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="compute dtype of the robust_jax model (config.model.dtype); not float32: the float32 "
                        "model is timed too (robust_jax_fp32)")


def jit(fn, args, **kwargs):
    return jit_with(fn, xla_options(args.xla_options), **kwargs)


def jit_with(fn, options: dict, **kwargs):
    import jax

    return jax.jit(fn, compiler_options=options or None, **kwargs)


def run_and_report(title: str, contenders: dict, args, *, unit, gflop: float = 0.0):
    """Warms up (compiles) every contender, times them interleaved, prints a table and the RATIO line.
    gflop: the work of one call (`model_gflop`); with it, each contender's GFLOP/s and its fraction of the
    machine's fp32 peak, estimated by the best 4096 sgemm (jax or torch) measured in this run: before the timings
    and once in every round (on a shared machine the best one is the closest to the idle peak)."""
    for fn in contenders.values():
        fn()
    peak = [sgemm_gflops()] if gflop else []
    timed = dict(contenders, **({"_sgemm": lambda: peak.append(sgemm_gflops(repeats=1))} if gflop else {}))
    times = interleaved(timed, args.repeats)
    times.pop("_sgemm", None)
    name, per_call = unit
    rows = [[k, f"{median(t):.3f}", f"{min(t):.3f}", f"{per_call / median(t):.2f}"] for k, t in times.items()]
    header = ["", "median s", "min s", name + " (median)"]
    if gflop:
        best = max(max(p.values()) for p in peak)
        rows = [r + [f"{gflop / median(times[r[0]]):.0f}", f"{gflop / median(times[r[0]]) / best:.0%}"] for r in rows]
        header += ["GFLOP/s", "of peak"]
    print(environment())
    conv = "plain flax conv (before the fix)" if getattr(args, "plain_flax_conv", False) else "library conv"
    options = getattr(args, "xla_options", "default")
    if options in XLA_OPTIONS:
        options = f"{options} {xla_options(options) or '{}'}"
    print(f"{title}, PreAct-ResNet-18, batch {BATCH}, {SIZE}x{SIZE}; XLA options: {options}; {conv}; "
          f"{args.repeats} interleaved repeats")
    print(table(rows, header))
    frac = ""
    if gflop:
        sgemms = ", ".join("jax %.0f torch %.0f" % (p["jax"], p["torch"]) for p in peak)
        print(f"fp32 peak estimate: best 4096x4096 sgemm of this run = {best:.0f} GFLOP/s "
              f"(before the timings, then once per round: {sgemms}); "
              f"one call = {gflop:.0f} GFLOP (convolutions and the linear layer, 2 FLOPs per multiply-add)")
        of_peak = lambda t: f"{gflop / t / best:.0%}"
        frac = (f"; fraction of fp32 peak (medians): robust_jax {of_peak(median(times['robust_jax']))}, pytorch "
                f"{of_peak(median(times['pytorch']))}")
        frac_best = (f"; fraction of fp32 peak (best times): robust_jax {of_peak(min(times['robust_jax']))}, "
                     f"pytorch {of_peak(min(times['pytorch']))}")
    else:
        frac_best = ""
    # On a shared machine PyTorch's OpenMP threads suffer from the load far more than XLA's thread pool, so the
    # median-of-rounds ratio then favours robust_jax; the ratio of the best times is the quiet-machine figure.
    print(f"RATIO robust_jax speed / pytorch = {ratio(times, 'pytorch', 'robust_jax'):.2f}x "
          f"(median over rounds of t_pytorch / t_robust_jax){frac}")
    print(f"RATIO of best times (quiet-machine estimate) = {min(times['pytorch']) / min(times['robust_jax']):.2f}x"
          f"{frac_best}")
    if "robust_jax_fp32" in times:
        print(f"RATIO robust_jax {getattr(args, 'dtype', '?')} speed / robust_jax float32 = "
              f"{ratio(times, 'robust_jax_fp32', 'robust_jax'):.2f}x")
    return times


def sgemm_gflops(n: int = 4096, repeats: int = 3) -> dict:
    """{'jax': , 'torch': } best-of-`repeats` GFLOP/s of an n x n float32 matmul on each side."""
    import jax
    import jax.numpy as jnp
    import torch

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(jnp.dot)
    ta = torch.ones(n, n)
    out = {}
    for side, fn in (("jax", lambda: f(a, a).block_until_ready()), ("torch", lambda: torch.mm(ta, ta))):
        fn()
        best = min(_timed(fn) for _ in range(repeats))
        out[side] = 2 * n ** 3 / best / 1e9
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def model_gflop(batch: int = BATCH) -> float:
    """GFLOP of one forward pass of the PyTorch PreAct-ResNet-18 on `batch` images: 2 x the multiply-adds of
    its convolutions and linear layer (BatchNorm, ReLU and elementwise work left out). An input gradient
    costs the same again, a full backward (input and weight gradients) twice."""
    import torch

    model, total = torch_preact_resnet18(), [0]

    def hook(m, inp, out):
        if isinstance(m, torch.nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total[0] += 2 * out.numel() * k
        elif isinstance(m, torch.nn.Linear):
            total[0] += 2 * out.numel() * m.in_features

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(batch, 3, SIZE, SIZE))
    return total[0] / 1e9


# --- timing ---------------------------------------------------------------------------------------------
def interleaved(contenders: dict, repeats: int, *, warm_up: bool = False) -> dict:
    """Times each `name -> fn()` (fn must block until its result is ready) `repeats` times, round robin, so
    that load changes on a shared machine hit every contender alike. Returns name -> list of seconds.
    warm_up: first call each contender once, untimed (compilation, first-touch allocation)."""
    if warm_up:
        for fn in contenders.values():
            fn()
    times = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def ratio(times: dict, slow: str, fast: str) -> float:
    """Median over rounds of time[slow] / time[fast] (taken in the same round: robust to drifting load)."""
    return statistics.median(s / f for s, f in zip(times[slow], times[fast]))


def median(ts) -> float:
    return statistics.median(ts)


def table(rows, header) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


# --- JAX side -------------------------------------------------------------------------------------------
def jax_model_and_variables(seed: int = 0, dtype: str = "float32"):
    """PreAct-ResNet-18 with compute dtype `dtype` (config.model.dtype; parameters stay float32: the variables
    are the same for every dtype)."""
    import jax
    import jax.numpy as jnp

    from configs import common
    from robust_jax import models

    kw = {} if dtype == "float32" else {"dtype": getattr(jnp, dtype)}
    model = models.get("preact_resnet18", num_classes=CLASSES, mean=common.CIFAR10_MEAN, std=common.CIFAR10_STD,
                       **kw)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, SIZE, SIZE, 3)), train=False))(jax.random.key(seed))
    return model, variables


def jax_batch(seed: int = 0):
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"image": jax.random.uniform(k1, (BATCH, SIZE, SIZE, 3), jnp.float32),
            "label": jax.random.randint(k2, (BATCH,), 0, CLASSES, jnp.int32)}


# --- PyTorch reference ----------------------------------------------------------------------------------
def torch_preact_resnet18():
    """PreAct-ResNet-18 of Rice, Wong & Kolter (2020), as in their repository (CIFAR layout)."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class PreActBlock(nn.Module):
        def __init__(self, in_planes, planes, stride=1):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(in_planes)
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.shortcut = None
            if stride != 1 or in_planes != planes:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

        def forward(self, x):
            out = F.relu(self.bn1(x))
            shortcut = self.shortcut(out) if self.shortcut is not None else x
            out = self.conv1(out)
            out = self.conv2(F.relu(self.bn2(out)))
            return out + shortcut

    class PreActResNet18(nn.Module):
        def __init__(self, num_classes=CLASSES):
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.2471, 0.2435, 0.2616]).view(1, 3, 1, 1))
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            layers, in_planes = [], 64
            for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers.append(nn.Sequential(PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)))
                in_planes = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.bn = nn.BatchNorm2d(512)
            self.linear = nn.Linear(512, num_classes)

        def forward(self, x):
            out = self.conv1((x - self.mean) / self.std)
            out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
            out = F.relu(self.bn(out))
            return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))

    torch.manual_seed(0)
    return PreActResNet18()


def torch_batch(seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.rand(BATCH, 3, SIZE, SIZE, generator=g), torch.randint(0, CLASSES, (BATCH,), generator=g)


def torch_pgd(model, x, y, *, steps: int, eps: float = EPS, step_size: float = STEP_SIZE):
    """Linf PGD with a uniform random start, as Rice et al.'s `attack_pgd`, but taking the gradient w.r.t. the
    input only (`torch.autograd.grad`; their `loss.backward()` also fills parameter gradients): the faster
    PyTorch variant, so the ratios are against the stronger reference."""
    import torch
    import torch.nn.functional as F

    delta = torch.empty_like(x).uniform_(-eps, eps)
    delta = (torch.clamp(x + delta, 0, 1) - x).requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(model(x + delta), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, delta)
        d = torch.clamp(delta.detach() + step_size * grad.sign(), -eps, eps)
        delta = (torch.clamp(x + d, 0, 1) - x).requires_grad_(True)
    return (x + delta).detach()
