"""AMP training step vs PGD-AT training step at equal attack steps, robust_jax only, same run.

    python benchmarks/amp_step.py [--quick] [--steps 10] [--variants endpoints,lambda,mixed_point]

Both are the library's jitted train step (`state.make_train_step`) over configs/cifar10_amp.py and
configs/cifar10_pgd_at.py (PGD-10, eps 8/255, attack in train mode; SGD momentum 0.9, wd 5e-4),
PreAct-ResNet-18, batch 32 of 32x32 images. AMP's endpoint variant attacks two points per example but runs
ONE forward/backward per step on their mixture, so its step should cost what PGD-AT's does (target <= 1.1x).
"""
from __future__ import annotations

import _common as C

VARIANT_ARGS = {"endpoints": None, "lambda": "lambda", "geometric": "geometric", "mixed_point": "mixed_point"}


def main():
    def extra(p):
        p.add_argument("--steps", type=int, default=10)
        p.add_argument("--variants", default="endpoints,lambda,mixed_point")
    args = C.parse_args(__doc__, C.add_jax_options(extra))
    import jax

    from configs import cifar10_amp, cifar10_pgd_at
    from robust_jax import methods, optim
    from robust_jax import state as state_lib

    model, variables = C.jax_model_and_variables()
    batch, key = C.jax_batch(), jax.random.key(1)

    def contender(config):
        method_cfg = config.method.copy_and_resolve_references()
        with method_cfg.unlocked():
            method_cfg.attack.steps = args.steps
        tx = optim.make_optimizer(config.optim, lambda step: config.optim.lr, variables["params"])
        state = state_lib.create(variables, tx, ema=False)
        step = C.jit(state_lib.make_train_step(methods.get(method_cfg, model, C.CLASSES), tx), args)

        def run():
            jax.block_until_ready(step(state, batch, key)[1])
        return run

    contenders = {"pgd_at": contender(cifar10_pgd_at.get_config())}
    for v in args.variants.split(","):
        contenders[f"amp:{v}"] = contender(cifar10_amp.get_config(VARIANT_ARGS[v]))
    times = C.interleaved(contenders, args.repeats, warm_up=True)
    print(C.environment())
    print(f"PGD-{args.steps} training step, PreAct-ResNet-18, batch {C.BATCH}, {C.SIZE}x{C.SIZE}; "
          f"{args.repeats} interleaved repeats")
    rows = [[k, f"{C.median(t):.3f}", f"{min(t):.3f}",
             f"{C.ratio(times, k, 'pgd_at'):.2f}x"] for k, t in times.items()]
    print(C.table(rows, ["", "median s", "min s", "time / PGD-AT (median over rounds)"]))
    for k in contenders:
        if k != "pgd_at":
            print(f"RATIO {k} time / pgd_at time = {C.ratio(times, k, 'pgd_at'):.2f}x")


if __name__ == "__main__":
    main()
