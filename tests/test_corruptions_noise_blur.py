"""Noise and blur corruptions and the shared filters against the ImageNet-C generator (`imagecorruptions`).

Filters are compared with scipy.ndimage / cv2 / the reference's helpers on random arrays. Deterministic
corruptions are compared after uint8 quantisation on small synthetic images; random corruptions are
compared through their deterministic cores fed with the reference's own numpy draws (replayed from the
same seed), and statistically through the public function."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.corruptions import filters as F


def _images(size, n=2, seed=0):
    """Small real-looking uint8 test images: smooth gradients, a disc and a box, stripes and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = []
    for i in range(n):
        a, b = rng.uniform(0.2, 1.0, 2)
        img = np.stack([a * xx, b * yy, 0.5 + 0.5 * np.sin(6 * xx * (i + 1) + 3 * yy)], -1) * 0.8
        cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
        y0, x0 = rng.integers(0, size // 2, 2)
        img[y0:y0 + size // 4, x0:x0 + size // 3] = rng.uniform(0, 1, 3)
        img += 0.08 * np.sin(40 * yy)[..., None] + rng.normal(0, 0.04, img.shape)
        out.append(np.clip(np.round(img * 255), 0, 255).astype(np.uint8))
    return out


# ------------------------------------------------------------------------------------------- filters

@pytest.mark.parametrize("mode", F.MODES)
def test_gaussian_filter_matches_scipy_every_mode(mode):
    ndi = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(0).random((20, 13, 3))
    for sigma in (0.4, 2.0, 7.0):  # 7.0: kernel radius 28 > image size, repeated reflections
        ref = ndi.gaussian_filter(x, (sigma, sigma, 0), mode=mode, truncate=4.0)
        np.testing.assert_allclose(F.gaussian_filter(x, sigma, mode=mode), ref, atol=5e-7)


@pytest.mark.parametrize("mode", F.MODES)
def test_banded_correlation_matches_scipy_every_mode(mode):
    """Blocks of 4 outputs on axes of 19 and 22 (neither a multiple of 4): the windows' boundary sources,
    the dropped tail and, at radius 14 > 4 + both axes' blocks, windows reaching past repeated reflections."""
    ndi = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(5).random((19, 22, 2))
    for sigma in (1.0, 3.5):
        taps = F.gaussian_kernel1d(sigma)
        for axis in (0, 1):
            ref = ndi.correlate1d(x, taps, axis=axis, mode=mode)
            np.testing.assert_allclose(F.correlate_along(jnp.asarray(x, jnp.float32), taps, mode, axis, block=4),
                                       ref, atol=5e-7)
    # gaussian_filter takes the banded product on axes longer than two blocks (here 70 > 2 x 32)
    x = np.random.default_rng(6).random((70, 9, 2))
    np.testing.assert_allclose(F.gaussian_filter(x, 1.5, mode=mode),
                               ndi.gaussian_filter(x, (1.5, 1.5, 0), mode=mode, truncate=4.0), atol=5e-7)


def test_gaussian_filter_matches_skimage_2d_per_axis_sigma():
    skf = pytest.importorskip("skimage.filters")
    x = np.random.default_rng(1).uniform(-1, 1, (24, 18))
    ref = skf.gaussian(x, sigma=np.array([0.32, 1.3]), mode="reflect", truncate=3)  # elastic's call
    np.testing.assert_allclose(F.gaussian_filter(x, (0.32, 1.3), mode="reflect", truncate=3), ref, atol=5e-7)
    ref = skf.gaussian(x, sigma=3)  # spatter's call: defaults mode='nearest', truncate 4
    np.testing.assert_allclose(F.gaussian_filter(x, 3), ref, atol=5e-7)
    with pytest.raises(ValueError, match="boundary mode"):
        F.gaussian_filter(x, 1.0, mode="edge")


def test_disk_kernel_and_correlate2d_match_reference_and_cv2():
    cv2 = pytest.importorskip("cv2")
    R = pytest.importorskip("imagecorruptions.corruptions")
    x = np.random.default_rng(2).random((19, 23, 3))
    for radius, alias in [(3, 0.1), (6, 0.5), (10, 0.5)]:
        k = R.disk(radius, alias)
        np.testing.assert_allclose(F.disk_kernel(radius, alias), k, atol=1e-8)
        ref = np.stack([cv2.filter2D(x[..., d], -1, k) for d in range(3)], -1)
        np.testing.assert_allclose(F.correlate2d(x, k), ref, atol=5e-7)
    k = np.arange(15, dtype=np.float64).reshape(3, 5) / 100  # asymmetric: catches a flipped kernel
    k_fft = np.random.default_rng(7).random((9, 11)) / 50  # asymmetric and > 7x7: the FFT path
    for mode, border in [("nearest", cv2.BORDER_REPLICATE), ("reflect", cv2.BORDER_REFLECT),
                         ("constant", cv2.BORDER_CONSTANT), ("mirror", cv2.BORDER_REFLECT_101)]:
        for kern in (k, k_fft):
            ref = cv2.filter2D(x[..., 0], -1, kern, borderType=border)
            np.testing.assert_allclose(F.correlate2d(x[..., 0], kern, mode=mode), ref, atol=5e-7)
        small, big = x[:9, :7, 1], R.disk(10, 0.5)  # 21x21 kernel on a 9x7 image: repeated reflections
        ref = cv2.filter2D(small, -1, big, borderType=border)
        np.testing.assert_allclose(F.correlate2d(small, big, mode=mode), ref, atol=5e-7)


@pytest.mark.parametrize("angle", [-44.3, 0.0, 17.9, -100.0])
def test_motion_blur_matches_reference(angle):
    R = pytest.importorskip("imagecorruptions.corruptions")
    x = np.random.default_rng(3).random((32, 40, 3)) * 255
    for radius, sigma in [(10, 3), (20, 15)]:  # radius 20: taps leave the 32-px image (reference breaks)
        ref = R._motion_blur(x, radius, sigma, angle)
        np.testing.assert_allclose(F.motion_blur(x, radius, sigma, angle), ref, atol=2e-4)
    ref = R._motion_blur(x[..., 0] / 255, 12, 8, angle)  # snow's 2-D layer
    np.testing.assert_allclose(F.motion_blur(x[..., 0] / 255, 12, 8, angle), ref, atol=1e-6)


def test_motion_blur_jits_with_a_traced_angle():
    x = np.random.default_rng(4).random((16, 16))
    f = jax.jit(lambda a: F.motion_blur(x, 10, 3, a))
    k = F.motion_blur_kernel(10, 3)
    cols = np.clip(np.arange(16)[None, :] + np.arange(21)[:, None], 0, 15)  # angle 0: dx_i = -i
    np.testing.assert_allclose(f(0.0), np.einsum("i,hiw->hw", k, x[:, cols]), atol=1e-6)
    np.testing.assert_allclose(f(90.0), np.einsum("i,ihw->hw", k, x[cols]), atol=1e-6)  # dy_i = -i


def test_zoom_taps_equal_scipy_zoom_of_the_centre_crop():
    """zoom_blur's two-tap tables reproduce clipped_zoom (crop + scipy.ndimage.zoom order 1 + first n)
    exactly, also at odd and ImageNet sizes the image tests do not reach."""
    ndi = pytest.importorskip("scipy.ndimage")
    from robust_jax.corruptions import blur
    for n in (16, 37, 224):
        for severity in (1, 5):
            for z in blur.zoom_factors(severity):
                ch = int(np.ceil(n / float(z)))
                top = (n - ch) // 2
                ref = ndi.zoom(np.eye(n)[top:top + ch], (z, 1), order=1)[:n]  # rows: weights on the input
                i0, i1, w0, w1 = blur.zoom_taps(n, z)
                got = np.zeros((n, n))
                np.add.at(got, (np.arange(n), i0), w0)
                np.add.at(got, (np.arange(n), i1), w1)
                np.testing.assert_allclose(got, ref, atol=1e-12, err_msg=f"n={n} z={z}")


# ------------------------------------------------------------------------------- corruptions: parity

def _quantised(out):
    """The uint8 levels `corrupt` produces (clip, floor with its 1e-4 guard), as float64 0..255."""
    return np.floor(np.clip(np.asarray(out, np.float64), 0, 1) * 255 + 1e-4)


def _assert_close_levels(got, ref, name, severity, mean_bound=0.005):
    """At most one uint8 level apart anywhere, and on average less than `mean_bound` levels."""
    d = np.abs(_quantised(got) - ref.astype(np.float64))
    assert d.max() <= 1, (name, severity, d.max())
    assert d.mean() <= mean_bound, (name, severity, d.mean())


@pytest.mark.parametrize("name", ["defocus_blur", "gaussian_blur", "zoom_blur"])
def test_deterministic_blurs_match_reference(name):
    ic = pytest.importorskip("imagecorruptions")
    from robust_jax.corruptions import corrupt
    for size in (32, 64):
        imgs = _images(size, 2)
        x = jnp.asarray(np.stack(imgs) / 255.0, jnp.float32)
        for severity in range(1, 6):
            got = corrupt(jax.random.key(0), x, name, severity) * 255  # already quantised
            ref = np.stack([ic.corrupt(im, severity, name) for im in imgs])
            # defocus 1: the reference's 29-pixel disk kernel sums to 1 - 4e-9 in float32, so flat
            # regions land just under an integer and the reference's truncation drops a level (~3 %).
            bound = 0.05 if (name, severity) == ("defocus_blur", 1) else 0.005
            _assert_close_levels(np.asarray(got) / 255, ref, name, severity, bound)


@functools.cache
def _numba_draws_fn():
    numba = pytest.importorskip("numba")

    @numba.njit
    def draws(h, w, m, passes, seed):
        np.random.seed(seed)
        out = np.zeros((passes, h - 2 * m, w - 2 * m, 2), np.int64)
        for i in range(passes):
            for a in range(h - 2 * m):
                for b in range(w - 2 * m):
                    d = np.random.randint(-m, m, size=(2,))
                    out[i, a, b, 0] = d[0]
                    out[i, a, b, 1] = d[1]
        return out

    return draws


def _numba_glass_draws(h, w, max_delta, passes, seed):
    """Replays the reference's numba draw sequence: np.random.seed(seed) then, per visited pixel in its
    loop order, `np.random.randint(-d, d, size=2)` -> (dx, dy)."""
    return _numba_draws_fn()(h, w, max_delta, passes, seed)


def _sequential_copy_shuffle(x, offsets, max_delta):
    """The reference's loop in plain numpy, with its copy (not swap) semantics made explicit."""
    x = x.copy()
    h, w = x.shape[:2]
    for off in offsets:
        for a, hh in enumerate(range(h - max_delta, max_delta, -1)):
            for b, ww in enumerate(range(w - max_delta, max_delta, -1)):
                dx, dy = off[a, b]
                x[hh, ww] = x[hh + dy, ww + dx]
    return x


def test_glass_shuffle_equals_reference_numba_loop_and_sequential_copies():
    R = pytest.importorskip("imagecorruptions.corruptions")
    from robust_jax.corruptions import blur

    def shuffle(x, offsets, m):
        h, w, c = x.shape
        out = jnp.asarray(x)
        for off in offsets:
            out = out.reshape(h * w, c)[blur.glass_shuffle_sources(h, w, m, off)].reshape(h, w, c)
        return np.asarray(out)

    x = np.random.default_rng(5).integers(0, 256, (33, 40, 3)).astype(np.uint8)
    for params in [(0.7, 1, 2), (1.5, 4, 2), (1.0, 2, 3)]:
        offsets = _numba_glass_draws(33, 40, params[1], params[2], 11)
        ref = R._shuffle_pixels_njit_glass_blur(33, 40, x.copy(), params, 11)
        np.testing.assert_array_equal(shuffle(x, offsets, params[1]), ref)
    # long chains: every pixel copies its lower neighbour, visited just before it (chains of ~H pixels)
    # or its right neighbour (chains of ~W pixels); mixed random offsets in [-2, 2)
    rng = np.random.default_rng(6)
    for offsets in (np.broadcast_to([0, 1], (1, 29, 36, 2)), np.broadcast_to([1, -2], (2, 29, 36, 2)),
                    rng.integers(-2, 2, (2, 29, 36, 2))):
        np.testing.assert_array_equal(shuffle(x, offsets, 2), _sequential_copy_shuffle(x, offsets, 2))


def test_glass_passes_compose_and_the_batch_gather_is_the_per_image_blur():
    """`glass_sources` (the passes' maps composed) moves pixels as the passes one after another, and the batch
    version `corrupt` calls (one gather over the flattened batch) returns the vmapped per-image `glass_blur`."""
    from robust_jax.corruptions import blur, threefry
    x = np.random.default_rng(7).integers(0, 256, (29, 36, 3)).astype(np.float32)
    offsets = np.random.default_rng(8).integers(-2, 2, (3, 25, 32, 2))
    sequential = jnp.asarray(x)
    for off in offsets:
        sequential = sequential.reshape(-1, 3)[blur.glass_shuffle_sources(29, 36, 2, off)].reshape(29, 36, 3)
    composed = x.reshape(-1, 3)[np.asarray(blur.glass_sources(29, 36, 2, jnp.asarray(offsets)))].reshape(29, 36, 3)
    np.testing.assert_array_equal(composed, sequential)
    assert not np.array_equal(composed, x)
    images, key = jax.random.uniform(jax.random.key(0), (3, 24, 20, 3)), jax.random.key(1)
    for severity, params in ((3, "imagenet"), (4, "cifar")):
        batch = jax.jit(lambda k, im: blur.glass_blur_batch(k, im, severity, params))(key, images)
        per_image = jax.jit(jax.vmap(lambda k, im: blur.glass_blur(k, im, severity, params)))(
            threefry.image_keys(key, 3), images)
        np.testing.assert_array_equal(batch, per_image)


def test_glass_blur_matches_reference_with_replayed_draws():
    ic = pytest.importorskip("imagecorruptions")
    from robust_jax.corruptions import blur
    core = jax.jit(blur.glass_blur_core, static_argnums=2)
    for size, severities in ((32, range(1, 6)), (64, (5,))):
        img = _images(size, 1, seed=size)[0]
        x = jnp.asarray(img / 255.0, jnp.float32)
        for severity in severities:
            _, m, passes = blur.GLASS[severity - 1]
            offsets = _numba_glass_draws(size, size, m, passes, 100 + severity)
            ref = ic.corrupt(img, severity, "glass_blur", seed=100 + severity)
            _assert_close_levels(core(x, offsets, severity), ref, "glass_blur", severity)


def test_motion_blur_matches_reference_with_replayed_angle():
    ic = pytest.importorskip("imagecorruptions")
    from robust_jax.corruptions import blur
    core = jax.jit(blur.motion_blur_core, static_argnums=2)
    for size in (32, 64):
        img = _images(size, 1, seed=size)[0]
        x = jnp.asarray(img / 255.0, jnp.float32)
        for severity in range(1, 6):
            np.random.seed(severity)
            ref = ic.corrupt(img, severity, "motion_blur")
            np.random.seed(severity)
            angle = np.random.uniform(-45, 45)  # the reference's only draw
            # near-horizontal/vertical angles: flat regions give exactly integer levels in exact
            # arithmetic, where float64 rounding decides the reference's truncation (up to ~1 % of pixels)
            _assert_close_levels(core(x, angle, severity), ref, "motion_blur", severity, 0.02)


def test_noise_cores_match_reference_with_replayed_draws():
    ic = pytest.importorskip("imagecorruptions")
    from robust_jax.corruptions import noise as N
    img = _images(64, 1, seed=3)[0]
    x = img / 255.0
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    for s in range(1, 6):
        np.random.seed(s)
        ref = ic.corrupt(img, s, "gaussian_noise")
        np.random.seed(s)
        got = N.gaussian_noise_core(f32(x), f32(np.random.normal(size=x.shape, scale=N.GAUSSIAN_STD[s - 1])))
        _assert_close_levels(got, ref, "gaussian_noise", s, 0.002)

        np.random.seed(s)
        ref = ic.corrupt(img, s, "shot_noise")
        np.random.seed(s)
        got = N.shot_noise_core(jnp.asarray(np.random.poisson(x * N.SHOT_PHOTONS[s - 1])), N.SHOT_PHOTONS[s - 1])
        _assert_close_levels(got, ref, "shot_noise", s, 0.002)

        ref = ic.corrupt(img, s, "impulse_noise", seed=s)  # skimage: default_rng(seed), two .random()
        rng = np.random.default_rng(s)
        u_flip, u_salt = rng.random(x.shape), rng.random(x.shape)
        got = N.impulse_noise_core(f32(x), f32(u_flip), f32(u_salt), N.IMPULSE_AMOUNT[s - 1])
        _assert_close_levels(got, ref, "impulse_noise", s, 0.0)

        np.random.seed(s)
        ref = ic.corrupt(img, s, "speckle_noise")
        np.random.seed(s)
        got = N.speckle_noise_core(f32(x), f32(np.random.normal(size=x.shape, scale=N.SPECKLE_STD[s - 1])))
        _assert_close_levels(got, ref, "speckle_noise", s, 0.002)


# ------------------------------------------------------- the fast exact samplers of shot / impulse noise

@pytest.mark.parametrize("photons", [3, 60, 500])  # ImageNet-C's extremes and CIFAR-10-C's largest
def test_poisson_sampler_matches_the_poisson_distribution(photons):
    """`poisson_sample` (alias table per grey level + inverse-CDF residual) has the Poisson(x * photons)
    distribution: chi-square goodness of fit over 200k draws per rate, for rates on a grey level
    (alias part only), between levels (alias + residual) and at the ends (0 and 1); fixed keys, so the
    test is deterministic; the threshold p > 1e-4 fails a biased sampler (e.g. a normal approximation
    at photons 3, or a 1% rate error at 500) with certainty at this sample size."""
    stats = pytest.importorskip("scipy.stats")
    from robust_jax.corruptions import noise as N
    n = 200_000
    for i, x in enumerate((0.0, 77 / 255, 77.5 / 255, 1 / 510, 1.0)):
        draws = np.asarray(N.poisson_sample(jax.random.key(i), jnp.full((n,), x, jnp.float32), photons)).astype(int)
        rate = float(np.float32(x)) * photons
        if rate == 0:
            assert draws.max() == 0
            continue
        top = int(rate + 10 * np.sqrt(rate) + 10)
        observed = np.bincount(np.minimum(draws, top), minlength=top + 1)
        expected = stats.poisson.pmf(np.arange(top + 1), rate) * n
        expected[-1] = stats.poisson.sf(top - 1, rate) * n
        keep = expected > 5  # pool the sparse cells
        obs = np.append(observed[keep], observed[~keep].sum())
        exp = np.append(expected[keep], expected[~keep].sum())
        obs, exp = (obs, exp) if exp[-1] > 5 else (obs[:-1], exp[:-1])
        chi2 = ((obs - exp) ** 2 / exp).sum()
        assert stats.chi2.sf(chi2, len(obs) - 1) > 1e-4, (photons, x, chi2, len(obs))
        assert abs(draws.mean() - rate) < 5 * np.sqrt(rate / n), (photons, x, draws.mean(), rate)


def test_impulse_uniforms_from_one_word():
    """impulse noise draws one 32-bit word per value: the flip uniform is uniform on 2**23 steps in [0, 1)
    and the salt bit is a fair coin independent of it."""
    from robust_jax.corruptions import noise as N
    u_flip, u_salt = (np.asarray(a) for a in N.impulse_uniforms(jax.random.key(0), (400_000,)))
    assert 0 <= u_flip.min() and u_flip.max() < 1 and set(np.unique(u_salt)) == {0.25, 0.75}
    np.testing.assert_array_equal(u_flip * 2 ** 23, np.floor(u_flip * 2 ** 23))
    for amount in (0.01, 0.09, 0.27):
        assert abs((u_flip <= amount).mean() - amount) < 5 * np.sqrt(amount / 400_000)
    flipped = u_flip <= 0.27
    assert abs((u_salt[flipped] <= 0.5).mean() - 0.5) < 5 * np.sqrt(0.25 / flipped.sum())


# ---------------------------------------------------------------- corruptions: public random functions

@pytest.mark.parametrize("name,draws,bound", [
    ("gaussian_noise", 4, 0.02), ("shot_noise", 4, 0.02), ("impulse_noise", 4, 0.05),
    ("speckle_noise", 4, 0.02), ("motion_blur", 4, 0.1),
    pytest.param("glass_blur", 1, 0.05, marks=pytest.mark.slow)])  # ~30 s cold: two glass compiles
def test_random_corruptions_change_images_as_much_as_reference(name, draws, bound):
    """Mean |corrupted - clean| over 3 images x `draws` draws within `bound` (relative) of the
    reference's, at severities 1, 3 and 5 (1 and 5 for glass; all draws seeded: deterministic)."""
    ic = pytest.importorskip("imagecorruptions")
    from robust_jax.corruptions import corrupt
    imgs = _images(64, 3)
    x = jnp.asarray(np.repeat(np.stack(imgs), draws, 0) / 255.0, jnp.float32)
    clean = np.asarray(x, np.float64)
    for s in ((1, 5) if name == "glass_blur" else (1, 3, 5)):
        ours = np.abs(np.asarray(corrupt(jax.random.key(s), x, name, s), np.float64) - clean).mean()
        refs = []
        for i, img in enumerate(imgs):
            for d in range(draws):
                np.random.seed(1000 * s + 10 * i + d)
                kw = {"seed": 1000 * s + 10 * i + d} if name in ("impulse_noise", "glass_blur") else {}
                refs.append(np.abs(ic.corrupt(img, s, name, **kw) / 255.0 - img / 255.0).mean())
        assert abs(ours / np.mean(refs) - 1) <= bound, (name, s, ours, np.mean(refs))


@pytest.mark.slow  # one compile of all nine corruptions: ~30 s cold on a 2-core machine
def test_corrupt_jits_on_small_and_grey_batches():
    """Every noise/blur corruption jits on a 16-px batch (below the reference's 32-px minimum), stays on
    the uint8 grid in [0,1], corrupts each image with its own draws, and works on grey images."""
    from robust_jax.corruptions import blur, corrupt, noise
    img = _images(16, 1)[0] / 255.0
    x = jnp.asarray(np.stack([img, img]), jnp.float32)
    names = list(noise.CORRUPTIONS) + list(blur.CORRUPTIONS)
    outs = jax.jit(lambda k, x: {n: corrupt(k, x, n, 5) for n in names})(jax.random.key(0), x)  # one compile
    for name in names:
        out = np.asarray(outs[name])
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1, name
        np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-3, err_msg=name)
        assert np.abs(out - img).mean() > 0.01, name
        random = name in ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "motion_blur",
                          "glass_blur")
        assert (not np.array_equal(out[0], out[1])) == random, name
    grey = corrupt(jax.random.key(1), x[..., :1], "gaussian_blur", 2)
    np.testing.assert_allclose(grey, corrupt(jax.random.key(1), jnp.repeat(x[..., :1], 3, -1),
                                             "gaussian_blur", 2)[..., :1], atol=1e-6)


def test_jit_with_per_corruption_compile_options_gives_corrupt_values():
    """`corruptions.jit` compiles the corruptions of CPU_COMPILER_OPTIONS with their own XLA:CPU options (the
    elemental loop emitter) and returns exactly what `jax.jit` of `corrupt` does with XLA's default fusion
    emitters (named: the suite's XLA_FLAGS choose the elemental one for everything); names and severities are
    checked before any tracing."""
    from robust_jax import corruptions
    x = jnp.asarray(np.stack(_images(32, 2)) / 255.0, jnp.float32)
    key = jax.random.key(3)
    assert set(corruptions.CPU_COMPILER_OPTIONS) <= set(corruptions.ALL)
    for name in sorted(corruptions.CPU_COMPILER_OPTIONS) + ["gaussian_noise"]:  # and one without options
        fn = corruptions.jit(name, 2, params="imagenet")
        want = jax.jit(lambda k, im: corruptions.corrupt(k, im, name, 2, params="imagenet"),
                       compiler_options={"xla_cpu_use_fusion_emitters": True})(key, x)
        np.testing.assert_array_equal(np.asarray(fn(key, x)), np.asarray(want), err_msg=name)
    with pytest.raises(ValueError, match="unknown corruption"):
        corruptions.jit("zoom", 2)
    with pytest.raises(ValueError, match="severity"):
        corruptions.jit("zoom_blur", 6)
