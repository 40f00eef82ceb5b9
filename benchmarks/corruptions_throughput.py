"""Throughput of our jitted corruptions vs the reference generator `imagecorruptions`, same images, same run.

    python benchmarks/corruptions_throughput.py [--quick] [--size 224] [--batch 16] [--severity 3]
                                                [--names gaussian_noise,shot_noise,...] [--params imagenet]

Images: the first `--batch` test images of ../shared/data/cifar10_subset.npz (real CIFAR-10 photographs),
upsampled to `--size` px with Pillow's bicubic filter (uint8), so both sides corrupt the same real-looking
pictures. Ours: `corruptions.corrupt` on the whole batch, jitted per corruption with its compile options as the
corruption evaluation does (`corruptions.jit`; compile excluded: every contender runs once untimed first),
float32 in [0,1] in, quantised float out, `block_until_ready`.
Reference: `imagecorruptions.corrupt(uint8 image, severity, name)` image by image (its only interface), numpy
and OpenCV on the same cores. Per corruption the two are timed interleaved (ours, reference, ours, ...) and
the RATIO is the median over rounds of t_reference / t_ours (> 1: ours faster). The set ratio is the median
over rounds of (sum of reference times) / (sum of our times) over the 15 mCE corruptions and over all 19.
"""
from __future__ import annotations

import os
import statistics
import time

import _common as C

DATA = os.path.join(C.ROOT, "..", "shared", "data", "cifar10_subset.npz")


def real_images(n: int, size: int):
    """`n` real photographs [n, size, size, 3] uint8: CIFAR-10 test images upsampled (Pillow bicubic)."""
    import numpy as np
    from PIL import Image

    x = np.load(DATA)["x_test"][:n]
    if size == x.shape[1]:
        return x
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in x])


def main():
    def extra(p):
        p.add_argument("--size", type=int, default=224)
        p.add_argument("--batch", type=int, default=16)
        p.add_argument("--severity", type=int, default=3)
        p.add_argument("--names", default="", help="comma-separated corruptions (default: all 19)")
        p.add_argument("--params", default="imagenet", help="our parameter set (the reference has ImageNet-C's)")
    args = C.parse_args(__doc__, extra)
    import jax
    import jax.numpy as jnp
    import numpy as np
    import imagecorruptions

    from robust_jax import corruptions

    names = tuple(args.names.split(",")) if args.names else corruptions.ALL
    images = real_images(args.batch, args.size)
    x = jnp.asarray(images, jnp.float32) / 255.0
    key = jax.random.key(0)

    def ours(name):
        fn = corruptions.jit(name, args.severity, params=args.params)

        def run():
            jax.block_until_ready(fn(key, x))
        return run

    def reference(name):
        def run():
            for im in images:
                np.asarray(imagecorruptions.corrupt(im, severity=args.severity, corruption_name=name))
        return run

    times = {}
    for name in names:
        contenders = {"ours": ours(name), "reference": reference(name)}
        t0 = time.perf_counter()
        for fn in contenders.values():  # compile (ours), first-touch and numba JIT (reference's glass blur)
            fn()
        warm = time.perf_counter() - t0
        times[name] = C.interleaved(contenders, args.repeats)
        t = times[name]
        print(f"  {name}: ours {C.median(t['ours']):.3f} s, reference {C.median(t['reference']):.3f} s "
              f"(warm-up incl. compile {warm:.1f} s)", flush=True)

    print(C.environment())
    print(f"Corruptions, {args.batch} images {args.size}x{args.size} (CIFAR-10 test images, bicubic upsampled), "
          f"severity {args.severity}, our params {args.params!r}; compile excluded; {args.repeats} interleaved "
          f"repeats; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end")
    rows = []
    for name, t in times.items():
        rows.append([name, f"{args.batch / C.median(t['ours']):.1f}", f"{args.batch / C.median(t['reference']):.1f}",
                     f"{C.ratio(t, 'reference', 'ours'):.2f}x"])
    print(C.table(rows, ["corruption", "ours images/s", "reference images/s", "ours/reference"]))
    for name, t in times.items():
        print(f"RATIO {name} ours/reference = {C.ratio(t, 'reference', 'ours'):.2f}x")
    for label, subset in (("mce15", corruptions.BENCHMARK), ("all19", corruptions.ALL)):
        subset = [n for n in subset if n in times]
        if len(subset) < 2:
            continue
        per_round = [sum(times[n]["reference"][r] for n in subset) / sum(times[n]["ours"][r] for n in subset)
                     for r in range(args.repeats)]
        ref_total = sum(C.median(times[n]["reference"]) for n in subset)
        our_total = sum(C.median(times[n]["ours"]) for n in subset)
        print(f"RATIO set:{label} ({len(subset)} corruptions) ours/reference = {statistics.median(per_round):.2f}x "
              f"(ours {len(subset) * args.batch / our_total:.1f} images/s, "
              f"reference {len(subset) * args.batch / ref_total:.1f} images/s)")


if __name__ == "__main__":
    main()
