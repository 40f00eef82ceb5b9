"""(b) PGD-20 evaluation throughput: robust_jax vs our PyTorch eager reference, same machine, same run.

    python benchmarks/pgd_eval.py [--quick] [--steps 20] [--xla-options ynn-conv] [--dtype bfloat16]

Both attack PreAct-ResNet-18 in eval mode (running BN statistics) on a batch of 32 random 32x32 images
(Linf, eps 8/255, step 2/255, uniform random start) and then classify the adversarial batch; the figure is
images per second of that whole evaluation (attack + final prediction). The robust_jax side is compiled with
the package's own XLA options (`robust_jax.compile_options`, what evaluate.py uses); each side's GFLOP/s is
also printed as a fraction of the machine's fp32 peak (a 4096 sgemm measured in the same run).
"""
from __future__ import annotations

import _common as C


def main():
    args = C.parse_args(__doc__, C.add_jax_options(lambda p: (p.add_argument("--steps", type=int, default=20),
                                                              C.add_dtype(p))))
    import jax
    import jax.numpy as jnp
    import torch

    from robust_jax.attacks import pgd

    batch, key = C.jax_batch(), jax.random.key(1)

    def jax_runner(dtype):
        model, variables = C.jax_model_and_variables(dtype=dtype)
        logits_fn = lambda v: (lambda x: model.apply(v, x, train=False))

        def robust_predictions(v, x, y, key):
            x_adv = pgd(logits_fn(v), x, y, key, norm="linf", eps=C.EPS, step_size=C.STEP_SIZE, steps=args.steps)
            return jnp.argmax(logits_fn(v)(x_adv), -1)

        robust_predictions = C.jit(robust_predictions, args)
        return lambda: robust_predictions(variables, batch["image"], batch["label"], key).block_until_ready()

    contenders = {"robust_jax": jax_runner(args.dtype)}
    if args.dtype != "float32":
        contenders["robust_jax_fp32"] = jax_runner("float32")

    tmodel = C.torch_preact_resnet18().eval()
    tx, ty = C.torch_batch()

    def torch_run():
        x_adv = C.torch_pgd(tmodel, tx, ty, steps=args.steps)
        with torch.no_grad():
            return tmodel(x_adv).argmax(-1)

    contenders["pytorch"] = torch_run
    C.run_and_report(f"PGD-{args.steps} evaluation (attack + prediction), robust_jax {args.dtype}", contenders, args,
                     unit=("images / s", C.BATCH), gflop=C.model_gflop() * (2 * args.steps + 1))

if __name__ == "__main__":
    main()
