"""The CIFAR-10-C parameter set (`params='cifar'`) against hand computations of Hendrycks & Dietterich's
CIFAR-10-C generator (make_cifar_c.py) with its parameter values, on a small 32x32 image.

Each reference below is written here from the generator's description (numpy / Pillow / scipy / skimage,
OpenCV where the generator uses it), independent of our JAX code; outputs are compared as uint8 levels. The
deterministic corruptions are compared end to end through `corrupt`; the random ones with structural CIFAR
differences (elastic's affine warp, frost's texture subsampling, glass blur's CIFAR rows) through their
deterministic cores fed with numpy draws.
"""
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.corruptions import corrupt, params

H = W = 32


def _image(seed=0):
    """A 32x32 uint8 image with gradients, texture, a flat block and noise (real-looking at CIFAR size)."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W] / H
    im = np.stack([xx * 0.8, yy, 0.5 + 0.5 * np.sin(5 * xx + 3 * yy)], -1) * 200 + 20
    im[4:12, 18:28] = (200, 40, 90)
    im += r.normal(0, 6, im.shape)
    return np.clip(im, 0, 255).astype(np.uint8)


IMG = _image()


def _ours(name, severity, img=IMG):
    x = jnp.asarray(img[None] / 255.0, jnp.float32)
    return np.round(np.asarray(corrupt(jax.random.key(0), x, name, severity, params="cifar"))[0] * 255).astype(int)


def _uint8(x):
    """The generator's `np.uint8(np.clip(x, 0, 1) * 255)` (truncation)."""
    return np.uint8(np.clip(x, 0, 1) * 255).astype(int)


def _assert_levels(got, ref, what, max_level=1, max_fraction=0.01):
    """Equal up to float32-vs-float64 truncation: at most `max_level` levels on <= `max_fraction` of values."""
    diff = np.abs(np.asarray(got, int) - np.asarray(ref, int))
    assert diff.max() <= max_level and (diff > 0).mean() <= max_fraction, (what, diff.max(), (diff > 0).mean())


# --------------------------------------------------------------------------------- selection


def test_resolve_auto_and_unknown_names():
    assert params.resolve("auto", 32, 32) == "cifar"
    assert params.resolve("auto", 224, 224) == "imagenet" and params.resolve("auto", 32, 40) == "imagenet"
    assert params.resolve("imagenet", 32, 32) == "imagenet" and params.resolve("cifar", 64, 64) == "cifar"
    with pytest.raises(ValueError, match="unknown corruption parameter set 'cifar10'.*imagenet, cifar, auto"):
        params.resolve("cifar10", 32, 32)
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match="unknown corruption parameter set"):
        corrupt(jax.random.key(0), x, "contrast", 1, params="ImageNet")
    with pytest.raises(ValueError, match="unknown corruption parameter set"):
        from robust_jax.corruptions import digital
        digital.contrast(None, x[0], 1, params="auto")  # the per-image functions need a concrete set


def test_auto_picks_cifar_at_32px_and_imagenet_above():
    x = jnp.asarray(IMG[None] / 255.0, jnp.float32)
    auto = corrupt(jax.random.key(0), x, "contrast", 2, params="auto")
    np.testing.assert_array_equal(auto, corrupt(jax.random.key(0), x, "contrast", 2, params="cifar"))
    assert not np.array_equal(auto, corrupt(jax.random.key(0), x, "contrast", 2, params="imagenet"))
    x64 = jnp.tile(x, (1, 2, 2, 1))
    np.testing.assert_array_equal(corrupt(jax.random.key(0), x64, "contrast", 2, params="auto"),
                                  corrupt(jax.random.key(0), x64, "contrast", 2, params="imagenet"))


def test_eval_config_field_is_checked():
    import ml_collections

    from robust_jax.evaluation import corruption_eval
    cfg = ml_collections.ConfigDict(dict(corruptions=dict(names="fog", severities=(1,), seed=0, quantize=True,
                                                          params="auto")))
    s = corruption_eval.settings(cfg)
    assert s["params"] == "auto" and "CIFAR-10-C" in s["parameters"]
    cfg.corruptions.params = "cifar10c"
    with pytest.raises(ValueError, match="eval.corruptions.params must be one of imagenet, cifar, auto"):
        corruption_eval.settings(cfg)
    from configs import common
    assert common.base().eval.corruptions.params == "auto"


# ------------------------------------------------------------------ deterministic: end to end


@pytest.mark.parametrize("severity", [1, 5])
def test_contrast_brightness_saturate_match_hand_computation(severity):
    color = pytest.importorskip("skimage.color")
    x = IMG / 255.0
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    means = x.mean(axis=(0, 1), keepdims=True)
    _assert_levels(_ours("contrast", severity), _uint8((x - means) * c + means), "contrast")
    hsv = color.rgb2hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1], 0, 1)
    _assert_levels(_ours("brightness", severity), _uint8(color.hsv2rgb(hsv)), "brightness")
    a, b = ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))[severity - 1]
    hsv = color.rgb2hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)
    # float32 HSV round trips land a hair off exact levels: the bound of the ImageNet parity test (10%)
    _assert_levels(_ours("saturate", severity), _uint8(color.hsv2rgb(hsv)), "saturate", max_fraction=0.1)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_pixelate_and_jpeg_match_pillow_exactly(severity):
    from PIL import Image
    pil = Image.fromarray(IMG)
    c = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    ref = np.asarray(pil.resize((int(32 * c), int(32 * c)), Image.BOX).resize((32, 32), Image.BOX))
    np.testing.assert_array_equal(_ours("pixelate", severity), ref)  # BOX back up, not NEAREST
    buf = io.BytesIO()
    pil.save(buf, "JPEG", quality=(80, 65, 58, 50, 40)[severity - 1])
    np.testing.assert_array_equal(_ours("jpeg_compression", severity), np.asarray(Image.open(buf)))


@pytest.mark.parametrize("severity", [1, 4, 5])
def test_defocus_and_gaussian_blur_match_hand_computation(severity):
    cv2 = pytest.importorskip("cv2")
    filters = pytest.importorskip("skimage.filters")
    x = IMG / 255.0
    radius, alias = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))[severity - 1]
    t = np.arange(-8, 9)  # radius <= 8: a 17x17 grid and a 3x3 antialiasing blur
    xx, yy = np.meshgrid(t, t)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    kernel = cv2.GaussianBlur(disk / disk.sum(), ksize=(3, 3), sigmaX=alias)
    ref = np.stack([cv2.filter2D(x[..., d], -1, kernel) for d in range(3)], -1)
    # severity 4 (radius 1, alias 0.2) is nearly the 5-pixel cross: many float64 values end a hair below a
    # level, which the reference truncates to the level below and `corrupt` keeps (its 1e-4 guard)
    _assert_levels(_ours("defocus_blur", severity), _uint8(ref), "defocus_blur", max_fraction=0.1)
    sigma = (0.4, 0.6, 0.7, 0.8, 1)[severity - 1]
    ref = filters.gaussian(x, sigma=sigma, channel_axis=-1)
    _assert_levels(_ours("gaussian_blur", severity), _uint8(ref), "gaussian_blur")


@pytest.mark.parametrize("severity", [1, 5])
def test_zoom_blur_matches_hand_computation_with_centre_trim(severity):
    from scipy.ndimage import zoom
    x = (IMG / 255.0).astype(np.float32)
    factors = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
               np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][severity - 1]
    out = np.zeros_like(x)
    for z in factors:
        ch = int(np.ceil(32 / z))
        top = (32 - ch) // 2
        zoomed = zoom(x[top:top + ch, top:top + ch], (z, z, 1), order=1)
        trim = (zoomed.shape[0] - 32) // 2  # CIFAR-10-C trims centrally
        out += zoomed[trim:trim + 32, trim:trim + 32]
    _assert_levels(_ours("zoom_blur", severity), _uint8((x + out) / (len(factors) + 1)), "zoom_blur")


# --------------------------------------------------------- random: cores fed with numpy draws


def test_elastic_cifar_matches_opencv_and_scipy_with_the_same_draws():
    cv2 = pytest.importorskip("cv2")
    filters = pytest.importorskip("skimage.filters")
    from scipy.ndimage import map_coordinates

    from robust_jax.corruptions import elastic
    rng = np.random.default_rng(1)
    image = (IMG / 255.0).astype(np.float32)
    core = jax.jit(elastic.elastic_cifar_from_draws, static_argnums=4)
    for severity in (1, 2, 5):
        alpha, sigma, a = params.CIFAR["elastic_transform"][severity - 1]
        pts1 = np.float32([[16 + 10, 16 + 10], [16 + 10, 16 - 10], [16 - 10, 16 - 10]])  # c +- min(H, W) // 3
        np.testing.assert_array_equal(elastic.affine_points(32, 32), pts1)
        shift = rng.uniform(-a, a, size=(3, 2)).astype(np.float32)
        warped = cv2.warpAffine(image, cv2.getAffineTransform(pts1, pts1 + shift), (32, 32),
                                borderMode=cv2.BORDER_REFLECT_101)
        nx, ny = rng.uniform(-1, 1, (32, 32)), rng.uniform(-1, 1, (32, 32))
        if alpha:
            dx = (filters.gaussian(nx, sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
            dy = (filters.gaussian(ny, sigma, mode="reflect", truncate=3) * alpha).astype(np.float32)
        else:
            dx = dy = np.zeros((32, 32), np.float32)
        x, y, z = np.meshgrid(np.arange(32), np.arange(32), np.arange(3))
        idx = (y + dy[..., None]).reshape(-1, 1), (x + dx[..., None]).reshape(-1, 1), z.reshape(-1, 1)
        ref = _uint8(map_coordinates(warped, idx, order=1, mode="reflect").reshape(32, 32, 3))
        got = core(jnp.asarray(image), jnp.asarray(shift), jnp.asarray(nx, jnp.float32), jnp.asarray(ny, jnp.float32),
                   severity)
        _assert_levels(np.floor(np.clip(np.asarray(got), 0, 1) * 255 + 1e-4), ref, f"elastic {severity}",
                       max_fraction=0.02)


def test_glass_blur_cifar_rows_match_the_reference_loop():
    filters = pytest.importorskip("skimage.filters")
    from robust_jax.corruptions import blur
    rng = np.random.default_rng(2)
    core = jax.jit(blur.glass_blur_core, static_argnums=(2, 3))
    for severity in (1, 4):
        sigma, delta, passes = params.CIFAR["glass_blur"][severity - 1]
        offsets = rng.integers(-delta, delta, size=(passes, 32 - 2 * delta, 32 - 2 * delta, 2))
        x = np.uint8(filters.gaussian(IMG / 255.0, sigma=sigma, channel_axis=-1) * 255)
        for i in range(passes):  # the generator's loop, its "swap" of array views being a copy
            for a, h in enumerate(range(32 - delta, delta, -1)):
                for b, w in enumerate(range(32 - delta, delta, -1)):
                    dx, dy = offsets[i, a, b]
                    x[h, w], x[h + dy, w + dx] = x[h + dy, w + dx], x[h, w]
        ref = _uint8(filters.gaussian(x / 255.0, sigma=sigma, channel_axis=-1))
        got = core(jnp.asarray(IMG / 255.0, jnp.float32), jnp.asarray(offsets), severity, "cifar")
        _assert_levels(np.floor(np.clip(np.asarray(got), 0, 1) * 255 + 1e-4), ref, f"glass {severity}",
                       max_fraction=0.02)


def test_frost_cifar_textures_are_opencv_resize_by_0_2():
    cv2 = pytest.importorskip("cv2")
    from robust_jax.corruptions import frost_textures
    try:
        folder = frost_textures.frost_dir()
    except FileNotFoundError:
        pytest.skip("frost textures not installed")
    stack, sizes = frost_textures.cifar_textures()
    assert len(sizes) == 5  # randint(5): frost6 is never used
    for i, name in enumerate(frost_textures.FILENAMES[:5]):
        ref = cv2.resize(cv2.imread(str(folder / name)), (0, 0), fx=0.2, fy=0.2)[..., ::-1]
        rows, cols = sizes[i]
        assert (rows, cols) == ref.shape[:2]
        # PNG textures decode identically in Pillow and OpenCV; the JPEG ones may differ by a level or two
        tol = 0 if name.endswith(".png") else 8
        assert np.abs(stack[i, :rows, :cols].astype(int) - ref.astype(int)).max() <= tol, name


@pytest.mark.parametrize("name", [*(pytest.param(n, marks=pytest.mark.slow) for n in ("fog", "snow", "spatter")),
                                  "frost", "motion_blur", "shot_noise", "impulse_noise", "gaussian_noise",
                                  "speckle_noise"])  # slow: ~10 s of compiles each on 2 cores
def test_random_cifar_corruptions_are_milder_than_imagenet_at_32px(name):
    """Every CIFAR row is the weaker one at 32 px (the point of the set): mean |change| at severity 3 is
    smaller with 'cifar' than with 'imagenet', and non-zero."""
    if name == "frost":
        from robust_jax.corruptions import frost_textures
        try:
            frost_textures.frost_dir()
        except FileNotFoundError:
            pytest.skip("frost textures not installed")
    x = jnp.asarray(np.stack([IMG, _image(1)]) / 255.0, jnp.float32)
    change = {p: float(jnp.abs(corrupt(jax.random.key(3), x, name, 3, params=p) - x).mean())
              for p in ("cifar", "imagenet")}
    assert 0 < change["cifar"] < change["imagenet"], change
