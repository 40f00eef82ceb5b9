"""(c) Compile time against the number of PGD steps: 10 vs 100 (target ratio <= 1.2).

    python benchmarks/compile_time.py [--quick] [--steps 10 100]

Times `jax.jit(f).lower(...).compile()` (tracing + XLA compilation, no persistent cache) of two programs, each
with fresh Python functions so no in-process cache is hit: the library's PGD-AT train step
(configs/cifar10_pgd_at.py) and the PGD evaluation attack, PreAct-ResNet-18, batch 32, 32x32. The reference
is the same program at the smaller step count, compiled in the same run (PyTorch eager compiles nothing);
the attack is a `fori_loop`, so the ratio should be ~1.
"""
from __future__ import annotations

import time

import _common as C


PROGRAMS = ("PGD-AT train step", "PGD eval attack")


def program(name: str, steps: int):
    """A fresh (function, args) pair: the library's PGD-AT train step or the PGD evaluation attack at `steps`."""
    import jax

    from robust_jax.attacks import pgd

    model, variables = C.jax_model_and_variables()
    batch, key = C.jax_batch(), jax.random.key(1)
    if name == "PGD eval attack":
        def attack(v, x, y, k):
            return pgd(lambda xx: model.apply(v, xx, train=False), x, y, k, eps=C.EPS, step_size=C.STEP_SIZE,
                       steps=steps)
        return attack, (variables, batch["image"], batch["label"], key)

    from configs import cifar10_pgd_at
    from robust_jax import methods, optim
    from robust_jax import state as state_lib

    config = cifar10_pgd_at.get_config()
    cfg = config.method.copy_and_resolve_references()
    with cfg.unlocked():
        cfg.attack.steps = steps
    method = methods.get(cfg, model, C.CLASSES)
    tx = optim.make_optimizer(config.optim, lambda s: config.optim.lr, variables["params"])
    state = state_lib.create(variables, tx, ema=False)
    return state_lib.make_train_step(method, tx), (state, batch, key)


def compile_seconds(fn, args, options) -> float:
    import jax

    t = time.perf_counter()
    jax.jit(fn, compiler_options=options or None).lower(*args).compile()
    return time.perf_counter() - t


def main():
    def extra(p):
        p.add_argument("--steps", type=int, nargs=2, default=(10, 100), metavar=("SMALL", "LARGE"))
    args = C.parse_args(__doc__, C.add_jax_options(extra))
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    options = C.xla_options(args.xla_options)
    small, large = args.steps
    for name in PROGRAMS:  # import and initialise everything once, outside the timings
        program(name, small)
    times = {}
    for _ in range(args.repeats):  # interleaved: small, large, small, large...
        for steps in (small, large):
            for name in PROGRAMS:
                fn, fn_args = program(name, steps)
                times.setdefault((name, steps), []).append(compile_seconds(fn, fn_args, options))
    print(C.environment())
    print(f"compile time (trace + XLA), PreAct-ResNet-18, batch {C.BATCH}; XLA options: {args.xla_options}; "
          f"{args.repeats} interleaved repeats (medians)")
    rows, verdicts = [], []
    for name in PROGRAMS:
        ts, tl = times[(name, small)], times[(name, large)]
        r = C.median([b / a for a, b in zip(ts, tl)])
        rows.append([name, f"{C.median(ts):.2f}", f"{C.median(tl):.2f}", f"{r:.2f}x"])
        verdicts.append(f"RATIO {name} compile(steps={large}) / compile(steps={small}) = {r:.2f}x (target <= 1.2)")
    print(C.table(rows, ["program", f"steps={small} s", f"steps={large} s", "ratio"]))
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
