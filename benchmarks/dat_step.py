"""DAT training step: its cost relative to a standard step, and robust_jax vs easyrobust's PyTorch DAT step.

    python benchmarks/dat_step.py [--quick] [--batch 32] [--size 32] [--xla-options eigen-conv]

Classifier: PreAct-ResNet-18 on both sides (`_common.py`), batch 32 of 32x32 images, SGD momentum 0.9.
VQGAN: DAT's OpenImages f8 16384 architecture with random weights, built as easyrobust's `VQModel` and
converted to ours with `robust_jax.models.convert.taming` (the same weights on both sides).
- robust_jax: the library's jitted train step (`state.make_train_step`) over `methods.dat` (reference
  variant: one-step L2 attack, eps = step = 0.1, random start with probability 0.8, train mode) and over
  `methods.standard`.
- PyTorch: easyrobust 0.2.4's own pieces in the order of its DAT `train_one_epoch`: CE on x,
  `reconstruct_with_vqgan` (no grad), `pgd_generator(L2, eps 0.1, 1 step, lr 0.1, random_start_prob 0.8,
  'mixup' criterion, train mode, use_best=False)`, reconstruct again, CE on it, backward, SGD. pgd_generator
  includes the reference's discarded extra forward pass; that is the reference's real cost.
Prints the four step times and three ratios: DAT / standard on each side, and robust_jax vs PyTorch on DAT.
"""
from __future__ import annotations

import os
import tempfile

import _common as C


def _extra(p):
    p.add_argument("--batch", type=int, default=C.BATCH)
    p.add_argument("--size", type=int, default=C.SIZE, help="image side (multiple of 8 for the f8 VQGAN)")


def main():
    args = C.parse_args(__doc__, C.add_jax_options(_extra))
    import jax
    import jax.numpy as jnp
    import ml_collections
    import numpy as np
    import optax
    import torch
    import torch.nn.functional as F
    from easyrobust.attacks import pgd_generator
    from easyrobust.third_party.vqgan import VQModel, reconstruct_with_vqgan

    from robust_jax import methods
    from robust_jax import state as state_lib
    from robust_jax.models import variables_io, vqgan
    from robust_jax.models.convert.taming import convert_taming_state_dict

    torch.manual_seed(0)
    arch = vqgan.CONFIGS["openimages_f8_16384"]
    ddconfig = dict(double_z=False, z_channels=arch["z_channels"], resolution=arch["resolution"], in_channels=3,
                    out_ch=3, ch=arch["ch"], ch_mult=list(arch["ch_mult"]), num_res_blocks=arch["num_res_blocks"],
                    attn_resolutions=list(arch["attn_resolutions"]), dropout=0.0)
    tvq = VQModel(ddconfig, n_embed=arch["n_embed"], embed_dim=arch["embed_dim"]).eval()
    vq_file = os.path.join(tempfile.mkdtemp(), "vqgan_f8.msgpack")
    variables_io.save_variables(vq_file, convert_taming_state_dict(tvq.state_dict(), "openimages_f8_16384"))

    rng = np.random.default_rng(0)
    x_np = rng.uniform(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
    y_np = rng.integers(0, C.CLASSES, args.batch).astype(np.int32)
    batch = {"image": jnp.asarray(x_np), "label": jnp.asarray(y_np)}
    model, variables = C.jax_model_and_variables()
    tx = optax.sgd(0.1, momentum=0.9)

    def method_cfg(name):
        return ml_collections.ConfigDict(dict(
            name=name, label_smoothing=0.0, mixup_alpha=0.0, cutmix_alpha=0.0,
            attack=dict(norm="l2", eps=0.1, step_size=0.1, steps=1, loss="ce", random_start="none", train_mode=True),
            vqgan=dict(checkpoint=vq_file, name="openimages_f8_16384", kwargs={}),
            dat=dict(variant="reference", start_prob=0.8)))

    def jax_contender(name):
        method = methods.get(method_cfg(name), model, C.CLASSES)
        step = C.jit(state_lib.make_train_step(method, tx), args, donate_argnums=0)
        st = {"state": state_lib.create(jax.tree.map(jnp.copy, variables), tx, ema=False)}  # donated
        key = jax.random.key(1)

        def run():
            st["state"], metrics = step(st["state"], batch, key, method.frozen)
            jax.block_until_ready(metrics)
        return run

    tmodel = C.torch_preact_resnet18().train()
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9)
    tx_ = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy())
    ty = F.one_hot(torch.from_numpy(y_np.astype(np.int64)), C.CLASSES).float()  # the recipe's soft targets

    def soft_ce(logits, t):
        return torch.sum(-t * F.log_softmax(logits, dim=-1), dim=-1).mean()

    def torch_standard():
        loss = soft_ce(tmodel(tx_), ty)
        topt.zero_grad(set_to_none=True)
        loss.backward()
        topt.step()
        return loss.item()

    def torch_dat():
        loss = soft_ce(tmodel(tx_), ty)
        with torch.no_grad():
            xrec = reconstruct_with_vqgan(tx_, tvq)
        adv = pgd_generator(xrec, ty, tmodel, attack_type="L2", eps=0.1, attack_steps=1, attack_lr=0.1,
                            random_start_prob=0.8, use_best=False, attack_criterion="mixup", eval_mode=False)
        with torch.no_grad():
            adv_rec = reconstruct_with_vqgan(adv, tvq)
        loss = loss + soft_ce(tmodel(adv_rec), ty)
        topt.zero_grad(set_to_none=True)
        loss.backward()
        topt.step()
        return loss.item()

    contenders = {"robust_jax standard": jax_contender("standard"), "robust_jax DAT": jax_contender("dat"),
                  "pytorch standard": torch_standard, "pytorch DAT": torch_dat}
    for fn in contenders.values():
        fn()  # compile / warm up
    times = C.interleaved(contenders, args.repeats)
    print(C.environment())
    print(f"DAT step vs standard step, PreAct-ResNet-18 + OpenImages f8 16384 VQGAN (random weights), batch "
          f"{args.batch}, {args.size}x{args.size}; XLA options: {args.xla_options}; {args.repeats} interleaved repeats")
    print(C.table([[k, f"{C.median(t):.3f}", f"{min(t):.3f}"] for k, t in times.items()], ["", "median s", "min s"]))
    print(f"RATIO robust_jax DAT / standard step time = {C.ratio(times, 'robust_jax DAT', 'robust_jax standard'):.2f}x")
    print(f"RATIO pytorch DAT / standard step time = {C.ratio(times, 'pytorch DAT', 'pytorch standard'):.2f}x")
    print(f"RATIO robust_jax DAT speed / pytorch DAT = {C.ratio(times, 'pytorch DAT', 'robust_jax DAT'):.2f}x "
          "(median over rounds of t_pytorch / t_robust_jax)")


if __name__ == "__main__":
    main()
