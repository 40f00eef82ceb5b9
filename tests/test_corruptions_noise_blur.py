"""Noise and blur corruptions and the shared filters against the ImageNet-C generator (`imagecorruptions`).

Filters are compared with scipy.ndimage / cv2 / the reference's helpers on random arrays. Deterministic
corruptions are compared after uint8 quantisation on small synthetic images; random corruptions are
compared through their deterministic cores fed with the reference's own numpy draws (replayed from the
same seed), and statistically through the public function."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from robust_jax.data.corruptions import filters as F


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
    for mode, border in [("nearest", cv2.BORDER_REPLICATE), ("reflect", cv2.BORDER_REFLECT),
                         ("constant", cv2.BORDER_CONSTANT), ("mirror", cv2.BORDER_REFLECT_101)]:
        ref = cv2.filter2D(x[..., 0], -1, k, borderType=border)
        np.testing.assert_allclose(F.correlate2d(x[..., 0], k, mode=mode), ref, atol=5e-7)


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
