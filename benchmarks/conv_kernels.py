"""Where the time of a PGD step goes: every convolution of PreAct-ResNet-18 (batch 32, 32x32), forward and
input gradient, on XLA:CPU's two convolution paths (YNNPACK fusions, jaxlib's default; Eigen, with
`--xla-options eigen-conv`) and in PyTorch eager (oneDNN), timed interleaved in one run.

    python benchmarks/conv_kernels.py [--quick]

The weighted sum over the network is the convolution time of one PGD step (forward + input gradient) for each
backend: it bounds what any attack loop can reach, and it is what the ratio to PyTorch comes down to.
XLA's input gradient is timed on a kernel prepared (flipped and feature-swapped) beforehand, as the attack
loop runs it after the fix; PyTorch's `conv_transpose2d` reorders its weights inside every call, as in its attack.
"""
from __future__ import annotations

import _common as C

# (input size, in channels, out channels, kernel, stride, how many in the network)
CONVS = [
    (32, 3, 64, 3, 1, 1),      # stem
    (32, 64, 64, 3, 1, 4),     # layer1
    (32, 64, 128, 3, 2, 1), (16, 128, 128, 3, 1, 3), (32, 64, 128, 1, 2, 1),   # layer2
    (16, 128, 256, 3, 2, 1), (8, 256, 256, 3, 1, 3), (16, 128, 256, 1, 2, 1),  # layer3
    (8, 256, 512, 3, 2, 1), (4, 512, 512, 3, 1, 3), (8, 256, 512, 1, 2, 1),    # layer4
]


def main():
    args = C.parse_args(__doc__)
    import jax
    import torch
    import jax.numpy as jnp
    import torch.nn.functional as F
    from jax import lax

    from robust_jax.models import layers

    torch.set_grad_enabled(False)
    dn = ("NHWC", "HWIO", "NHWC")
    paths = {"xla ynn": C.XLA_OPTIONS["ynn-conv"], "xla eigen": C.XLA_OPTIONS["eigen-conv"]}
    rows, totals = [], {}
    for n, cin, cout, k, s, count in CONVS:
        p = k // 2
        x = jax.random.normal(jax.random.key(0), (C.BATCH, n, n, cin))
        w = jax.random.normal(jax.random.key(1), (k, k, cin, cout)) * 0.05
        conv = lambda x, w: layers.conv_general_dilated(x, w, (s, s), ((p, p), (p, p)), dimension_numbers=dn)
        g = conv(x, w)
        # The input gradient as the attack loop runs it: a conv of g with the flipped, feature-swapped kernel,
        # prepared once outside (hoisted out of the loop there), input dilated by the stride.
        m = g.shape[1]
        pads = ((k - 1 - p, n - (m - 1) * s - 1 + p),) * 2
        prepared = jnp.swapaxes(jnp.flip(w, (0, 1)), 2, 3)
        input_grad = lambda g, wt: lax.conv_general_dilated(g, wt, (1, 1), pads, lhs_dilation=(s, s),
                                                            dimension_numbers=dn)
        expected = jax.vjp(lambda xx: conv(xx, w), x)[1](g)[0]
        assert jnp.allclose(input_grad(g, prepared), expected, rtol=1e-4, atol=1e-3)
        tx, tw = torch.randn(C.BATCH, cin, n, n), torch.randn(cout, cin, k, k)
        tg = F.conv2d(tx, tw, stride=s, padding=p)
        contenders = {}
        for name, opts in paths.items():
            fwd = C.jit_with(conv, opts).lower(x, w).compile()
            bwd = C.jit_with(input_grad, opts).lower(g, prepared).compile()
            contenders[f"{name} fwd"] = lambda c=fwd: c(x, w).block_until_ready()
            contenders[f"{name} dx"] = lambda c=bwd: c(g, prepared).block_until_ready()
        contenders["torch fwd"] = lambda: F.conv2d(tx, tw, stride=s, padding=p)
        contenders["torch dx"] = lambda: F.conv_transpose2d(tg, tw, stride=s, padding=p, output_padding=s - 1)
        for fn in contenders.values():
            fn()
        times = C.interleaved(contenders, max(3, args.repeats))
        gflop = 2 * C.BATCH * (n // s) ** 2 * cin * cout * k * k / 1e9
        row = [f"{n}x{n} {cin}->{cout} k{k} s{s}", count, f"{gflop:.2f}"]
        for name, t in times.items():
            ms = C.median(t) * 1e3
            totals[name] = totals.get(name, 0.0) + count * ms
            row.append(f"{ms:.1f} ({gflop / ms * 1e3:.0f})")
        rows.append(row)
    print(C.environment())
    print(f"convolutions of PreAct-ResNet-18, batch {C.BATCH}: median ms (GFLOP/s), {max(3, args.repeats)} "
          f"interleaved repeats")
    print(C.table(rows, ["conv", "count", "GFLOP"] + list(totals)))
    print("sum over the network, ms: " + ", ".join(f"{k} {v:.0f}" for k, v in totals.items()))
    step = {k: totals[f"{k} fwd"] + totals[f"{k} dx"] for k in ("xla ynn", "xla eigen", "torch")}
    print("conv time of one PGD step (forward + input gradient), ms: "
          + ", ".join(f"{k} {v:.0f}" for k, v in step.items()))
    print(f"RATIO conv time torch / xla eigen = {step['torch'] / step['xla eigen']:.2f}x; "
          f"torch / xla ynn = {step['torch'] / step['xla ynn']:.2f}x")


if __name__ == "__main__":
    main()
