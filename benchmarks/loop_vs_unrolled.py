"""Item 1 evidence: a PGD step inside `lax.fori_loop` vs the same steps unrolled in Python, with the library's
conv (`layers.conv_general_dilated`, the fix) and with flax's plain `lax.conv_general_dilated` (before it).

    python benchmarks/loop_vs_unrolled.py [--quick] [--steps 5] [--eval-mode] [--xla-options eigen-conv]
    python benchmarks/loop_vs_unrolled.py --hlo-variants   # loop structures, HLO only (no timing)

PreAct-ResNet-18, batch 32, 32x32, Linf PGD (eps 8/255, step 2/255), model in train mode (batch statistics,
as the PGD-AT attack) unless --eval-mode. Prints per-step times, the loop/unrolled ratios, and what the
optimised HLO holds: convolutions whose kernel is in the reversed `01oi` layout, kernel `reverse` ops inside
the while body, and the compile time of each program. PyTorch eager (same attack) is the outside reference.
`--hlo-variants` compiles other loop structures (parameters as explicit carry instead of closed over,
`unroll=2`, `scan`, `while_loop`) with both convs and prints the same HLO counts.
"""
from __future__ import annotations

import time

import _common as C


def hlo_stats(text: str) -> dict:
    import hlo

    loops = hlo.loops_with(text, "convolution")
    body_lines = loops[-1] if loops else []
    convs = [line for line in text.splitlines() if " convolution(" in line]
    return {"convs": len(convs), "01oi convs": sum("_01oi->" in line for line in convs),
            "convs in loop": sum(" convolution(" in line for line in body_lines),
            "reverse in loop": sum(" reverse(" in line for line in body_lines)}


def hlo_variants(args):
    """Loop structures x convs: what the optimised HLO holds (eval-mode model; no timing)."""
    import jax
    import jax.numpy as jnp

    from robust_jax.attacks import losses
    from robust_jax.models import layers

    from robust_jax.attacks import projected_gradient as pgd_mod
    model, v = C.jax_model_and_variables()
    batch = C.jax_batch()
    x, y = batch["image"], batch["label"]

    def step(v, xa, x, y):
        g = jax.grad(lambda xx: jnp.sum(losses.cross_entropy(model.apply(v, xx, train=False), y)))(xa)
        return pgd_mod.project(xa + pgd_mod.ascent_step(g, norm="linf", step_size=C.STEP_SIZE), x, norm="linf",
                               eps=C.EPS)

    n = args.steps
    variants = {
        "fori_loop, params closed over (pgd)": lambda v, x, y: jax.lax.fori_loop(
            0, n, lambda i, xa: step(v, xa, x, y), x),
        "fori_loop, params in the carry": lambda v, x, y: jax.lax.fori_loop(
            0, n, lambda i, c: (c[0], step(c[0], c[1], x, y)), (v, x))[1],
        "fori_loop, unroll=2": lambda v, x, y: jax.lax.fori_loop(
            0, 2 * n, lambda i, xa: step(v, xa, x, y), x, unroll=2),
        "scan": lambda v, x, y: jax.lax.scan(lambda xa, _: (step(v, xa, x, y), None), x, None, length=n)[0],
        "while_loop": lambda v, x, y: jax.lax.while_loop(
            lambda c: c[0] < n, lambda c: (c[0] + 1, step(v, c[1], x, y)), (0, x))[1],
    }
    fixed, rows = layers.conv_general_dilated, []
    keys = ["convs", "01oi convs", "convs in loop", "reverse in loop"]
    for conv_name, conv in (("plain flax conv", None), ("fixed conv", fixed)):
        layers.conv_general_dilated = conv
        for name, f in variants.items():  # fresh functions: jit's trace cache must not be hit
            stats = hlo_stats(C.jit(lambda *a, f=f: f(*a), args).lower(v, x, y).compile().as_text())
            rows.append([conv_name, name] + [stats[k] for k in keys])
    layers.conv_general_dilated = fixed
    print(C.environment())
    print(C.table(rows, ["conv", "loop structure"] + keys))


def main():
    def extra(p):
        p.add_argument("--steps", type=int, default=5)
        p.add_argument("--eval-mode", action="store_true", help="attack the model with running BN statistics")
        p.add_argument("--hlo-variants", action="store_true", help="other loop structures, HLO counts only")
    args = C.parse_args(__doc__, C.add_jax_options(extra))
    if args.hlo_variants:
        return hlo_variants(args)
    import jax
    import jax.numpy as jnp

    from robust_jax.attacks import losses
    from robust_jax.attacks import pgd as pgd_lib
    from robust_jax.models import layers

    from robust_jax.attacks import projected_gradient as pgd_mod
    model, variables = C.jax_model_and_variables()
    batch, key = C.jax_batch(), jax.random.key(1)
    x, y = batch["image"], batch["label"]
    train = not args.eval_mode
    settings = dict(norm="linf", eps=C.EPS, step_size=C.STEP_SIZE)

    def logits_fn(v):
        if train:
            return lambda xa: model.apply(v, xa, train=True, mutable=["batch_stats"])[0]
        return lambda xa: model.apply(v, xa, train=False)

    def loop(v, x, y, k):
        return pgd_lib(logits_fn(v), x, y, k, steps=args.steps, **settings)

    def unrolled(v, x, y, k):
        f = logits_fn(v)
        grad = jax.grad(lambda xa: jnp.sum(losses.cross_entropy(f(xa), y)))
        xa = pgd_mod.random_init(k, x, norm="linf", eps=C.EPS, mode=True)
        for _ in range(args.steps):
            step = pgd_mod.ascent_step(grad(xa), norm="linf", step_size=C.STEP_SIZE)
            xa = pgd_mod.project(xa + step, x, norm="linf", eps=C.EPS)
        return jax.lax.stop_gradient(xa)

    fixed_conv = layers.conv_general_dilated
    compiled, stats = {}, {}
    for conv_name, conv in (("fixed conv", fixed_conv), ("plain flax conv", None)):
        layers.conv_general_dilated = conv  # read when the model is traced, i.e. in .lower()
        for fn in (loop, unrolled):
            name = f"{fn.__name__}, {conv_name}"
            t = time.perf_counter()
            c = C.jit(lambda *a, fn=fn: fn(*a), args).lower(variables, x, y, key).compile()
            stats[name] = {"compile s": f"{time.perf_counter() - t:.1f}", **hlo_stats(c.as_text())}
            compiled[name] = c
    layers.conv_general_dilated = fixed_conv

    import torch

    tmodel = C.torch_preact_resnet18().train(train)
    tx, ty = C.torch_batch()
    contenders = {k: (lambda c=c: c(variables, x, y, key).block_until_ready()) for k, c in compiled.items()}
    contenders["pytorch eager"] = lambda: C.torch_pgd(tmodel, tx, ty, steps=args.steps)
    times = C.interleaved(contenders, args.repeats, warm_up=True)
    print(C.environment())
    print(f"PGD-{args.steps} ({'train' if train else 'eval'}-mode BN), PreAct-ResNet-18, batch {C.BATCH}; "
          f"XLA options: {args.xla_options}; {args.repeats} interleaved repeats")
    keys = ["compile s", "convs", "01oi convs", "convs in loop", "reverse in loop"]
    rows = [[k, f"{C.median(t) / args.steps:.3f}", f"{C.ratio(times, k, 'unrolled, fixed conv'):.2f}x"]
            + [stats.get(k, {}).get(s, "") for s in keys] for k, t in times.items()]
    print(C.table(rows, ["", "s / step (median)", "time vs unrolled+fixed"] + keys))
    print(f"RATIO loop / unrolled, plain flax conv (before the fix) = "
          f"{C.ratio(times, 'loop, plain flax conv', 'unrolled, plain flax conv'):.2f}x")
    print(f"RATIO loop / unrolled, fixed conv = {C.ratio(times, 'loop, fixed conv', 'unrolled, fixed conv'):.2f}x")
    print(f"RATIO loop fixed / loop before (speed-up of the fix) = "
          f"{C.ratio(times, 'loop, plain flax conv', 'loop, fixed conv'):.2f}x")
    print(f"RATIO loop fixed / unrolled before (the target: <= 1.00x) = "
          f"{C.ratio(times, 'loop, fixed conv', 'unrolled, plain flax conv'):.2f}x")
    print(f"RATIO robust_jax (loop, fixed) speed / pytorch = {C.ratio(times, 'pytorch eager', 'loop, fixed conv'):.2f}x")


if __name__ == "__main__":
    main()
