"""(a) One PGD-10 adversarial training step: robust_jax vs our PyTorch eager reference, same run.

    python benchmarks/pgd_at_step.py [--quick] [--steps 10] [--xla-options ynn-conv] [--dtype bfloat16]

robust_jax: the library's own jitted train step (`state.make_train_step` over the `pgd_at` method of
configs/cifar10_pgd_at.py: PGD-10, eps 8/255, step 2/255, uniform start, attack in train mode; SGD momentum
0.9, weight decay 5e-4), PreAct-ResNet-18, batch 32 of 32x32 images, compiled with the package's own XLA
options (`robust_jax.compile_options`, what train.py uses). PyTorch: the same model, attack (input gradients
only) and SGD step written eagerly in `_common.py`. Also printed: each side's GFLOP/s as a fraction of the
machine's fp32 peak (a 4096 sgemm measured in the same run). `--dtype bfloat16` times the bfloat16-compute
model (config.model.dtype) and the float32 one side by side.
"""
from __future__ import annotations

import _common as C


def main():
    args = C.parse_args(__doc__, C.add_jax_options(lambda p: (p.add_argument("--steps", type=int, default=10),
                                                              C.add_dtype(p))))
    import jax
    import torch
    import torch.nn.functional as F

    from configs import cifar10_pgd_at
    from robust_jax import methods, optim
    from robust_jax import state as state_lib

    config = cifar10_pgd_at.get_config()
    method_cfg = config.method.copy_and_resolve_references()
    with method_cfg.unlocked():
        method_cfg.attack.steps = args.steps
    batch, key = C.jax_batch(), jax.random.key(1)

    def jax_runner(dtype):
        model, variables = C.jax_model_and_variables(dtype=dtype)
        method = methods.get(method_cfg, model, C.CLASSES)
        tx = optim.make_optimizer(config.optim, lambda step: config.optim.lr, variables["params"])
        state = state_lib.create(variables, tx, ema=False)
        step = C.jit(state_lib.make_train_step(method, tx), args, donate_argnums=0)

        def run():
            nonlocal state
            state, metrics = step(state, batch, key)
            jax.block_until_ready(metrics)
        return run

    contenders = {"robust_jax": jax_runner(args.dtype)}
    if args.dtype != "float32":
        contenders["robust_jax_fp32"] = jax_runner("float32")

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

    contenders["pytorch"] = torch_run
    forward = C.model_gflop()  # the attack: forward + input gradient per step; the update: forward + backward
    C.run_and_report(f"PGD-{args.steps} adversarial training step, robust_jax {args.dtype}", contenders, args,
                     unit=("steps / s", 1), gflop=forward * (2 * args.steps + 3))


if __name__ == "__main__":
    main()
