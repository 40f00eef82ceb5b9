"""MixACM training step vs a standard training step and a PGD-10 AT step, robust_jax only, same run.

    python benchmarks/mixacm_step.py [--quick] [--setting preact|digits|cifar10_subset] [--teacher same|wrn]

All three are the library's jitted train step (`state.make_train_step`) with the recipes' optimisers:
'standard' = cross-entropy; 'mixacm' = the MixACM method block (mixup, KD, channel ACM on the last three taps)
with a frozen teacher passed as an argument of the step; 'pgd_at' = PGD-10 adversarial training. Settings:
- 'preact': PreAct-ResNet-18 student, batch 32 of 32x32 (configs/cifar10_mixacm.py, configs/cifar10_pgd_at.py);
- 'digits': the small CNN of configs/digits_mixacm.py and configs/default.py, batch 64 of 16x16x1;
- 'cifar10_subset': configs/cifar10_mixacm.py:subset (small CNN 16/32/64, batch 128 of 32x32; PGD-AT ':teacher').
The teacher is the student's architecture ('--teacher wrn': a WRN-16-4, wider, with 1x1 projections); its
weights are random, speed does not depend on them. MixACM generates no adversarial example: its step is a
standard step plus one teacher forward in eval mode (and the ACM/KD terms): target <= 1.5x the standard step.
The per-epoch line multiplies the median step time by the recipe's steps per epoch (compute only, no input
pipeline).
"""
from __future__ import annotations

import _common as C

SETTINGS = {  # config module, args of (standard, mixacm, pgd_at), batch, image shape, steps per epoch
    "preact": ("cifar10_mixacm", ("standard", None, None), 32, (32, 32, 3), 1563),  # 50,000 images
    "digits": ("digits_mixacm", ("standard", None, None), 64, (16, 16, 1), 22),
    "cifar10_subset": ("cifar10_mixacm", ("subset,standard", "subset", "subset,teacher"), 128, (32, 32, 3), 39),
}


def main():
    def extra(p):
        p.add_argument("--setting", choices=sorted(SETTINGS), default="preact")
        p.add_argument("--teacher", choices=("same", "wrn"), default="same")
    args = C.parse_args(__doc__, C.add_jax_options(extra))
    import importlib

    import jax
    import jax.numpy as jnp

    from configs import cifar10_pgd_at, default
    from robust_jax import builders, methods, models, optim
    from robust_jax import state as state_lib
    from robust_jax.methods import mixacm as mixacm_lib

    module, (std_arg, mix_arg, at_arg), batch_size, shape, steps_per_epoch = SETTINGS[args.setting]
    recipe = importlib.import_module(f"configs.{module}")
    configs = {"standard": recipe.get_config(std_arg), "mixacm": recipe.get_config(mix_arg),
               "pgd_at": {"preact": cifar10_pgd_at.get_config(), "digits": default.get_config()}.get(
                   args.setting) or recipe.get_config(at_arg)}
    if args.setting == "preact":
        for c in configs.values():
            with c.unlocked():
                c.model.update(name="preact_resnet18", kwargs={})
    model = builders.build_model(configs["mixacm"], 10)
    x0 = jnp.zeros((1,) + shape)
    init = lambda m, seed: jax.jit(lambda k: m.init(k, x0, train=False))(jax.random.key(seed))
    variables = init(model, 0)
    k1, k2 = jax.random.split(jax.random.key(1))
    batch = {"image": jax.random.uniform(k1, (batch_size,) + shape),
             "label": jax.random.randint(k2, (batch_size,), 0, 10)}
    if args.teacher == "wrn":
        teacher = models.get("wrn", depth=16, widen_factor=4, num_classes=10, mean=model.mean, std=model.std)
    else:
        teacher = model
    teacher_vars = init(teacher, 2)

    def contender(name):
        config = configs[name]
        method_cfg = config.method.copy_and_resolve_references()
        params = variables["params"]
        if name == "mixacm":
            s = mixacm_lib.MixACM.settings_from_config(method_cfg, 10)
            proj = mixacm_lib.init_projections(jax.random.key(3), model.apply, variables, teacher.apply, teacher_vars,
                                               x0, blocks=s["blocks"], teacher_blocks=s["teacher_blocks"])
            params = {**params, state_lib.METHOD_PARAMS: proj} if proj else params
            method = mixacm_lib.MixACM(model, method_cfg, 10, teacher=(teacher, teacher_vars))
        else:
            method = methods.get(method_cfg, model, 10)
        tx = optim.make_optimizer(config.optim, lambda step: config.optim.lr, params)
        state = state_lib.create({**variables, "params": params}, tx, ema=False)
        step = C.jit(state_lib.make_train_step(method, tx), args)
        frozen = method.frozen

        def run():
            jax.block_until_ready(step(state, batch, jax.random.key(4), frozen)[1])
        return run

    contenders = {name: contender(name) for name in configs}
    times = C.interleaved(contenders, args.repeats, warm_up=True)
    print(C.environment())
    print(f"training step, setting {args.setting} ({type(model).__name__} student, teacher {type(teacher).__name__}), "
          f"batch {batch_size} of {shape}; {args.repeats} interleaved repeats")
    rows = [[k, f"{C.median(t):.3f}", f"{min(t):.3f}", f"{C.median(t) * steps_per_epoch:.1f}",
             f"{C.ratio(times, k, 'standard'):.2f}x", f"{C.ratio(times, k, 'pgd_at'):.2f}x"] for k, t in times.items()]
    print(C.table(rows, ["", "median s / step", "min s", f"s / epoch ({steps_per_epoch} steps)", "time / standard",
                         "time / PGD-10 AT"]))
    print(f"RATIO mixacm time / standard time = {C.ratio(times, 'mixacm', 'standard'):.2f}x")
    print(f"RATIO mixacm time / pgd_at time = {C.ratio(times, 'mixacm', 'pgd_at'):.2f}x")


if __name__ == "__main__":
    main()
