"""(b) PGD-20 evaluation throughput: robust_jax vs our PyTorch eager reference, same machine, same run.

    python benchmarks/pgd_eval.py [--quick] [--steps 20] [--xla-options eigen-conv]

Both attack PreAct-ResNet-18 in eval mode (running BN statistics) on a batch of 32 random 32x32 images
(Linf, eps 8/255, step 2/255, uniform random start) and then classify the adversarial batch; the figure is
images per second of that whole evaluation (attack + final prediction).
"""
from __future__ import annotations

import _common as C


def main():
    args = C.parse_args(__doc__, C.add_jax_options(lambda p: p.add_argument("--steps", type=int, default=20)))
    import jax
    import jax.numpy as jnp
    import torch

    from robust_jax.attacks import pgd

    model, variables = C.jax_model_and_variables()
    batch = C.jax_batch()
    logits_fn = lambda v: (lambda x: model.apply(v, x, train=False))

    def robust_predictions(v, x, y, key):
        x_adv = pgd(logits_fn(v), x, y, key, norm="linf", eps=C.EPS, step_size=C.STEP_SIZE, steps=args.steps)
        return jnp.argmax(logits_fn(v)(x_adv), -1)

    robust_predictions = C.jit(robust_predictions, args)

    key = jax.random.key(1)
    jax_run = lambda: robust_predictions(variables, batch["image"], batch["label"], key).block_until_ready()

    tmodel = C.torch_preact_resnet18().eval()
    tx, ty = C.torch_batch()

    def torch_run():
        x_adv = C.torch_pgd(tmodel, tx, ty, steps=args.steps)
        with torch.no_grad():
            return tmodel(x_adv).argmax(-1)

    C.run_and_report(f"PGD-{args.steps} evaluation (attack + prediction)", {"robust_jax": jax_run, "pytorch": torch_run},
                     args, unit=("images / s", C.BATCH))

if __name__ == "__main__":
    main()
