"""(d) Peak memory against the number of PGD steps (should be flat: the attack is a `fori_loop`).

    python benchmarks/memory.py [--quick] [--steps 10 100] [--rss-steps 2 20]

Two measures, for the library's PGD-AT train step (configs/cifar10_pgd_at.py) and the PGD evaluation attack,
PreAct-ResNet-18, batch 32, 32x32:
  * XLA's buffer assignment of the compiled program (`compiled.memory_analysis()`): temporaries, arguments,
    outputs; exact and deterministic;
  * the peak resident memory (VmHWM) of a fresh process that builds, compiles and runs one call, next to the
    same for our PyTorch eager reference (train step / evaluation); at `--rss-steps` (fewer steps, as every
    process really runs them; `--quick` skips the 2nd repeat).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import _common as C

MB = 1 << 20


def worker(kind: str, program: str, steps: int, options: str):
    """Runs one call in this (fresh) process and prints its peak RSS as JSON."""
    import _common as C  # noqa: F811 (re-import in the child)

    if kind == "jax":
        import jax

        from compile_time import program as build

        fn, fn_args = build(program, steps)
        jax.block_until_ready(C.jit_with(fn, C.xla_options(options))(*fn_args))
    else:
        import torch
        import torch.nn.functional as F

        model = C.torch_preact_resnet18()
        x, y = C.torch_batch()
        if program == "PGD-AT train step":
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            loss = F.cross_entropy(model(C.torch_pgd(model, x, y, steps=steps)), y)
            loss.backward()
            opt.step()
        else:
            C.torch_pgd(model.eval(), x, y, steps=steps)
    # VmHWM, not ru_maxrss: after fork+exec Linux's ru_maxrss also counts the parent's pages at the fork
    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_mb": hwm_kb / 1024}))


def peak_rss(kind, program, steps, options) -> float:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", kind, program, str(steps), options],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_mb"]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])

    def extra(p):
        p.add_argument("--steps", type=int, nargs=2, default=(10, 100), metavar=("SMALL", "LARGE"))
        p.add_argument("--rss-steps", type=int, nargs=2, default=(2, 20), metavar=("SMALL", "LARGE"))
    args = C.parse_args(__doc__, C.add_jax_options(extra))
    import jax

    from compile_time import PROGRAMS, program

    small, large = args.steps
    print(C.environment())
    print(f"memory vs PGD steps, PreAct-ResNet-18, batch {C.BATCH}, {C.SIZE}x{C.SIZE}; XLA options: {args.xla_options}")
    rows, verdicts = [], []
    for name in PROGRAMS:
        stats = {}
        for steps in (small, large):
            fn, fn_args = program(name, steps)
            m = C.jit_with(fn, C.xla_options(args.xla_options)).lower(*fn_args).compile().memory_analysis()
            stats[steps] = (m.temp_size_in_bytes, m.argument_size_in_bytes, m.output_size_in_bytes)
            rows.append([name, "robust_jax XLA buffers", steps, f"{m.temp_size_in_bytes / MB:.1f}",
                         f"{m.argument_size_in_bytes / MB:.1f}", f"{m.output_size_in_bytes / MB:.1f}", ""])
        verdicts.append(f"RATIO {name} XLA temp buffers steps={large} / steps={small} = "
                        f"{stats[large][0] / stats[small][0]:.2f}x (flat = 1.00x)")
        rss = {}
        r_small, r_large = args.rss_steps
        for kind in ("jax", "torch"):
            for steps in (r_small, r_large):
                rss[kind, steps] = C.median([peak_rss(kind, name, steps, args.xla_options)
                                             for _ in range(1 if args.quick else 2)])
                label = "robust_jax process" if kind == "jax" else "pytorch process"
                rows.append([name, label, steps, "", "", "", f"{rss[kind, steps]:.0f}"])
            verdicts.append(f"RATIO {name} {kind} peak RSS steps={r_large} / steps={r_small} = "
                            f"{rss[kind, r_large] / rss[kind, r_small]:.2f}x")
        verdicts.append(f"RATIO {name} peak RSS robust_jax / pytorch at steps={r_large} = "
                        f"{rss['jax', r_large] / rss['torch', r_large]:.2f}x")
    print(C.table(rows, ["program", "measure", "steps", "temp MB", "args MB", "out MB", "peak RSS MB"]))
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
