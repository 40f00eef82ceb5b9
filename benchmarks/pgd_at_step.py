"""(a) One PGD-10 adversarial training step: robust_jax vs our PyTorch eager reference, same run.

    python benchmarks/pgd_at_step.py [--quick] [--steps 10] [--xla-options eigen-conv]

robust_jax: the library's own jitted train step (`state.make_train_step` over the `pgd_at` method of
configs/cifar10_pgd_at.py: PGD-10, eps 8/255, step 2/255, uniform start, attack in train mode; SGD momentum
0.9, weight decay 5e-4), PreAct-ResNet-18, batch 32 of 32x32 images. PyTorch: the same model, attack (input
gradients only) and SGD step written eagerly in `_common.py`.
"""
from __future__ import annotations

import _common as C


def main():
    args = C.parse_args(__doc__, C.add_jax_options(lambda p: p.add_argument("--steps", type=int, default=10)))
    import jax
    import torch
    import torch.nn.functional as F

    from configs import cifar10_pgd_at
    from robust_jax import methods, optim
    from robust_jax import state as state_lib

    config = cifar10_pgd_at.get_config()
    model, variables = C.jax_model_and_variables()
    method_cfg = config.method.copy_and_resolve_references()
    with method_cfg.unlocked():
        method_cfg.attack.steps = args.steps
    method = methods.get(method_cfg, model, C.CLASSES)
    tx = optim.make_optimizer(config.optim, lambda step: config.optim.lr, variables["params"])
    state = state_lib.create(variables, tx, ema=False)
    step = C.jit(state_lib.make_train_step(method, tx), args, donate_argnums=0)
    batch, key = C.jax_batch(), jax.random.key(1)

    def jax_run():
        nonlocal state
        state, metrics = step(state, batch, key)
        jax.block_until_ready(metrics)

    tmodel = C.torch_preact_resnet18().train()
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    tx_, ty = C.torch_batch()

    def torch_run():
        x_adv = C.torch_pgd(tmodel, tx_, ty, steps=args.steps)  # train mode, as Rice et al.
        loss = F.cross_entropy(tmodel(x_adv), ty)
        topt.zero_grad(set_to_none=True)
        loss.backward()
        topt.step()
        return loss.item()

    C.run_and_report(f"PGD-{args.steps} adversarial training step", {"robust_jax": jax_run, "pytorch": torch_run},
                     args, unit=("steps / s", 1))


if __name__ == "__main__":
    main()
