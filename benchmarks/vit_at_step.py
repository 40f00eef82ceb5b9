"""PGD-AT training step with ARD and/or PRM vs plain PGD-AT, small ViT, robust_jax only, same run.

    python benchmarks/vit_at_step.py [--quick] [--steps 10] [--variants ard,prm,ard+prm]

The library's jitted train step (`state.make_train_step`) over a `pgd_at` method block: PGD-10, eps 8/255,
step 2/255, attack in eval mode; SGD momentum 0.9. Model: a ViT with 32x32 input, patch 4 (64 patches),
width 96, depth 4, 4 heads, batch 32. ARD/PRM run mid-schedule (keep probability 0.5, so both randomisations
are active at every step). Their per-step work is a Bernoulli draw per block, a where on the attention
probabilities' backward pass, a permutation of the patches and a where on the image: the step should cost
what plain PGD's does (target <= 1.1x).
"""
from __future__ import annotations

import _common as C

VARIANTS = {"ard": dict(ard=True), "prm": dict(prm=True), "ard+prm": dict(ard=True, prm=True)}
VIT = dict(image_size=C.SIZE, patch_size=4, hidden_dim=96, depth=4, num_heads=4)


def main():
    def extra(p):
        p.add_argument("--steps", type=int, default=10)
        p.add_argument("--variants", default="ard+prm")
    args = C.parse_args(__doc__, C.add_jax_options(extra))
    import jax
    import jax.numpy as jnp
    import ml_collections
    import optax

    from configs import common
    from robust_jax import methods, models
    from robust_jax import state as state_lib

    model = models.get("vit", num_classes=C.CLASSES, mean=common.CIFAR10_MEAN, std=common.CIFAR10_STD, **VIT)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, C.SIZE, C.SIZE, 3)), train=False))(jax.random.key(0))
    batch, key = C.jax_batch(), jax.random.key(1)
    steps_per_epoch, warmup = 100, 2.0
    # state.step = 100 -> epoch 1.0 of a 2-epoch warm-up: keep probability 0.5
    step_at = jnp.int32(round(0.5 * warmup * steps_per_epoch))

    def contender(**attack):
        cfg = ml_collections.ConfigDict(dict(methods.config_defaults(), name="pgd_at"))
        cfg.attack.update(eps=C.EPS, step_size=C.STEP_SIZE, steps=args.steps, keep_warmup_epochs=warmup, **attack)
        method = methods.get(cfg, model, C.CLASSES, steps_per_epoch=steps_per_epoch)
        tx = optax.sgd(0.01, momentum=0.9)
        state = state_lib.create(variables, tx, ema=False).replace(step=step_at)
        step = C.jit(state_lib.make_train_step(method, tx), args).lower(state, batch, key).compile()
        cost = step.cost_analysis()
        costs[attack_name(attack)] = cost[0] if isinstance(cost, list) else cost

        def run():
            jax.block_until_ready(step(state, batch, key)[1])
        return run

    def attack_name(attack):
        return "+".join(k for k in ("ard", "prm") if attack.get(k)) or "plain"

    costs = {}
    contenders = {"plain": contender()}
    for v in args.variants.split(","):
        contenders[v] = contender(**VARIANTS[v])
    times = C.interleaved(contenders, args.repeats, warm_up=True)
    print(C.environment())
    print(f"PGD-{args.steps} training step (pgd_at), ViT 32px/patch 4, width {VIT['hidden_dim']}, depth "
          f"{VIT['depth']}, batch {C.BATCH}; ARD/PRM keep probability 0.5; {args.repeats} interleaved repeats")
    rows = [[k, f"{C.median(t):.3f}", f"{min(t):.3f}", f"{C.ratio(times, k, 'plain'):.2f}x"]
            for k, t in times.items()]
    print(C.table(rows, ["", "median s", "min s", "time / plain PGD-AT (median over rounds)"]))
    for k in contenders:  # load-independent: XLA's cost model of the compiled step
        if k != "plain" and all("flops" in c for c in (costs[k], costs["plain"])):
            print(f"XLA cost analysis {k} / plain: flops {costs[k]['flops'] / costs['plain']['flops']:.3f}x, "
                  f"bytes accessed {costs[k]['bytes accessed'] / costs['plain']['bytes accessed']:.3f}x")
    for k in contenders:
        if k != "plain":
            print(f"RATIO {k} time / plain time = {C.ratio(times, k, 'plain'):.2f}x")


if __name__ == "__main__":
    main()
