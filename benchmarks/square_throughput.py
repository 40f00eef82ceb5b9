"""Square Attack throughput: robust_jax's `attacks.square` vs pyautoattack's `SquareAttack` on AutoAttack's
example ResNet-18 (the converted weights of autoattack_parity.py), and the bare forward pass under it.

    python benchmarks/square_throughput.py [--n 13] [--queries 100] [--repeats 3] [--torch-threads N]

Square is AutoAttack's last and, on a robust model, longest attack: every query is one forward pass of the
points still robust. To time the query loop itself, eps is tiny (1e-5), so no point is ever fooled and both
sides run every query on every point. `--n` clean-correct CIFAR-10 test images of `--data` (13 is how many
survived AutoAttack at 1/255 in autoattack_parity.py's run). Contenders, interleaved: each side's Square
(`--queries` iterations) and each side's forward pass of the same batch repeated `--queries` times, so that a
gap splits into model speed and loop overhead. Prints point-queries/s and RATIO lines (> 1: robust_jax faster).
"""
from __future__ import annotations

import _common as C
from autoattack_parity import DEFAULT_DATA, load_data, load_models


def _args():
    def extra(p):
        p.add_argument("--data", default=DEFAULT_DATA, help="npz with x_test (uint8 NHWC) and y_test")
        p.add_argument("--n", type=int, default=13, help="clean-correct test images attacked together")
        p.add_argument("--queries", type=int, default=100, help="Square iterations per timed call")
        p.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    return C.parse_args(__doc__, extra)


def main():
    args = _args()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from pyautoattack.square import SquareAttack

    from robust_jax import compile_options
    from robust_jax.attacks.square_attack import square

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    net, apply_fn, variables = load_models()
    x, y = load_data(args.data, 200)
    with torch.no_grad():
        pred = net(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).argmax(1).numpy()
    keep = np.flatnonzero(pred == y)[:args.n]
    x, y = x[keep], y[keep]
    xt, yt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y.astype(np.int64))
    eps, q = 1e-5, args.queries

    attack = compile_options.jit(lambda v, xb, yb, key: square(
        lambda z: apply_fn(v, z), xb, yb, key, norm="linf", eps=eps, queries=q, p_init=0.8, restarts=1,
        loss="margin", rescale_schedule=False))
    forwards = compile_options.jit(lambda v, xb: jax.lax.fori_loop(
        0, q, lambda i, acc: acc + apply_fn(v, xb + 1e-9 * i.astype(jnp.float32)), jnp.zeros((len(y), 10))))
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    ref = SquareAttack(net, p_init=0.8, n_queries=q, eps=eps, norm="Linf", n_restarts=1, seed=0, verbose=False,
                       device="cpu", resc_schedule=False)

    def torch_forwards():
        with torch.no_grad():
            for _ in range(q):
                net(xt)

    contenders = {
        "robust_jax square": lambda: jax.block_until_ready(attack(variables, xj, yj, jax.random.key(0))),
        "pytorch square": lambda: ref.perturb(xt, yt),
        "robust_jax forwards": lambda: jax.block_until_ready(forwards(variables, xj)),
        "pytorch forwards": torch_forwards,
    }
    times = C.interleaved(contenders, args.repeats, warm_up=True)
    print(C.environment())
    print(f"ResNet-18 (AutoAttack's example), {len(y)} CIFAR-10 points, Linf eps {eps} (nothing fooled), "
          f"{q} queries per call, {args.repeats} interleaved repeats, torch threads {torch.get_num_threads()}")
    rows = [[k, f"{C.median(t):.2f}", f"{min(t):.2f}", f"{q * len(y) / C.median(t):.0f}"] for k, t in times.items()]
    print(C.table(rows, ["", "median s", "min s", "point-queries/s"]))
    for what in ("square", "forwards"):
        print(f"RATIO {what}: robust_jax speed / pytorch = "
              f"{C.ratio(times, f'pytorch {what}', f'robust_jax {what}'):.2f}x (median over rounds), "
              f"best times {min(times[f'pytorch {what}']) / min(times[f'robust_jax {what}']):.2f}x")


if __name__ == "__main__":
    main()
