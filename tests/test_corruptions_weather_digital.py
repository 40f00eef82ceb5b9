"""Weather and digital corruptions vs the ImageNet-C generator (`imagecorruptions`) on the same images.

Deterministic corruptions are compared end to end (`corrupt` vs `imagecorruptions.corrupt`); random ones
through their deterministic cores fed with the reference's own numpy draws (the test seeds `np.random`
and replays the reference's draw sequence), plus a statistical comparison of the public functions.
Agreement is measured on uint8 outputs, in grey levels (1 level = 1/255); the bounds asserted here are
those recorded in docs/corruptions/weather_digital.md.
"""
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.corruptions import (
    corrupt,
    elastic,
    frost_textures,
    jpeg,
    resample,
    spatter,
    weather,
)

SIZES = ((32, 32), (64, 64), (40, 56))
"""Test image sizes; the non-square one catches height/width mix-ups (used by the heavy tests)."""


def _image(h, w, seed):
    """A small real-looking uint8 image: smooth gradients, a sinusoidal texture, a flat rectangle, a
    disc, and sensor noise."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    a, b = r.uniform(2, 8, 2)
    im = np.stack([xx * r.uniform(0.5, 1), yy, 0.5 + 0.5 * np.sin(a * xx + b * yy)], -1) * 200 + 20
    y0, x0 = r.integers(0, h // 2, 2)
    im[y0:y0 + h // 4, x0:x0 + w // 3] = r.integers(0, 256, 3)
    im[(yy - 0.7) ** 2 + (xx - 0.3) ** 2 < 0.02] = r.integers(0, 256, 3)
    im += r.normal(0, 6, im.shape)
    return np.clip(im, 0, 255).astype(np.uint8)


IMAGES = {size: _image(*size, seed=i) for i, size in enumerate(SIZES)}


def _levels(x):
    """Float image in [0,1] -> uint8 levels as `corrupt` quantises them."""
    return np.asarray(jnp.floor(jnp.clip(x, 0.0, 1.0) * 255.0 + 1e-4)).astype(int)


def _float(img):
    return jnp.asarray(img / 255.0, jnp.float32)


# ------------------------------------------------------------------------------------- resampling


def test_hsv_matches_skimage():
    skimage = pytest.importorskip("skimage")
    x = IMAGES[(32, 32)] / 255.0
    x[:4, :4] = 0.5  # grey pixels (delta = 0)
    x[4:8, :4] = [0.2, 0.9, 0.9]  # ties of the maximum
    hsv = skimage.color.rgb2hsv(x)
    np.testing.assert_allclose(resample.rgb_to_hsv(jnp.asarray(x, jnp.float32)), hsv, atol=2e-6)
    np.testing.assert_allclose(resample.hsv_to_rgb(jnp.asarray(hsv, jnp.float32)), skimage.color.hsv2rgb(hsv),
                               atol=2e-6)


def test_pil_resizes_are_exact():
    from PIL import Image
    img = _image(37, 45, seed=3)
    for out_w, out_h in ((27, 22), (11, 9), (16, 30)):
        ref = np.asarray(Image.fromarray(img).resize((out_w, out_h), Image.BOX))
        np.testing.assert_array_equal(resample.pil_resize_box_uint8(jnp.asarray(img, jnp.int32), out_h, out_w), ref)
        small = np.asarray(Image.fromarray(img).resize((out_w, out_h), Image.BOX))
        ref = np.asarray(Image.fromarray(small).resize((45, 37), Image.NEAREST))
        np.testing.assert_array_equal(resample.pil_resize_nearest(jnp.asarray(small), 37, 45), ref)


def test_scipy_zoom_and_map_coordinates():
    ndimage = pytest.importorskip("scipy.ndimage")
    r = np.random.default_rng(0)
    field = r.normal(size=(30, 30, 1)).astype(np.float32)
    for zoom in (2, 2.5, 4.5):
        ref = ndimage.zoom(field, (zoom, zoom, 1), order=1)
        np.testing.assert_allclose(resample.zoom_linear(jnp.asarray(field), zoom), ref, atol=1e-5)
    img = (IMAGES[(32, 32)] / 255.0).astype(np.float32)
    rows, cols = r.uniform(-40, 70, (32, 32)), r.uniform(-50, 80, (32, 32))
    ref = np.stack([ndimage.map_coordinates(img[..., c], (rows, cols), order=1, mode="reflect") for c in range(3)], -1)
    out = resample.map_coordinates_linear_reflect(jnp.asarray(img), jnp.asarray(rows, jnp.float32),
                                                  jnp.asarray(cols, jnp.float32))
    np.testing.assert_allclose(out, ref, atol=2e-5)


def test_cv2_cubic_resize():
    cv2 = pytest.importorskip("cv2")
    img = _image(60, 80, seed=4)
    for out_h, out_w in ((66, 88), (100, 130), (35, 41)):
        ref = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_CUBIC).astype(int)
        diff = np.abs(resample.cv2_resize_cubic_uint8(img, out_h, out_w).astype(int) - ref)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


# ----------------------------------------------------------------------------------- deterministic

# corruption -> (max levels, mean levels) asserted over severities 1..5 and all image sizes
DETERMINISTIC = {
    "contrast": (0, 0.0), "pixelate": (0, 0.0), "jpeg_compression": (0, 0.0),
    "brightness": (1, 0.1), "saturate": (1, 0.1),
}


ALL_CASES = [(size, severity) for size in SIZES for severity in range(1, 6)]
FAST_CASES = [((32, 32), 5)]
"""Fast runs check one case per corruption; the `heavy` runs (`pytest -m heavy`) check all sizes x all severities."""


def _deterministic_parity(name, cases):
    ic = pytest.importorskip("imagecorruptions")
    max_bound, mean_bound = DETERMINISTIC[name]
    for size, severity in cases:
        img = IMAGES[size]
        ref = ic.corrupt(img, severity, name).astype(int)
        out = _levels(corrupt(jax.random.key(0), _float(img)[None], name, severity)[0])
        diff = np.abs(out - ref)
        assert diff.max() <= max_bound and diff.mean() <= mean_bound, (name, size, severity, diff.max(), diff.mean())
        assert np.abs(ref - img).mean() > 0.5  # the corruption changed the image


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_parity(name):
    _deterministic_parity(name, FAST_CASES)


@pytest.mark.slow
@pytest.mark.heavy  # every size x severity (minutes); test_deterministic_parity checks one case of each corruption
@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_parity_all_severities(name):
    _deterministic_parity(name, ALL_CASES)


def test_jpeg_odd_sizes_and_tables():
    """Edge padding (odd sizes; an even height whose chroma does not fill whole blocks, where libjpeg
    pads the subsampled rows), and the quality scaling (clamped at 255)."""
    from PIL import Image
    for (h, w), quality in (((37, 45), 7), ((40, 54), 18)):
        img = _image(h, w, seed=5)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality)
        decoded = Image.open(buf)
        luma, chroma = jpeg.quant_tables(quality)
        np.testing.assert_array_equal(np.asarray(decoded.quantization[0]).reshape(8, 8), luma)
        np.testing.assert_array_equal(np.asarray(decoded.quantization[1]).reshape(8, 8), chroma)
        out = np.round(np.asarray(jpeg.jpeg_roundtrip(_float(img), quality)) * 255).astype(int)
        np.testing.assert_array_equal(out, np.asarray(decoded))


def test_spatter_canny_and_distance_transform_match_opencv():
    """The two OpenCV steps spatter rebuilds, on a blurred noise field like spatter's (many short edges,
    long chains, flat zero areas): `cv2.Canny(50, 150)` exactly; `cv2.distanceTransform(L2, 5)` within
    float32 rounding below the truncation at 20 (the sums' order differs from OpenCV's scan)."""
    cv2 = pytest.importorskip("cv2")
    from scipy import ndimage

    r = np.random.default_rng(3)
    field = ndimage.gaussian_filter(r.normal(0.65, 0.3, (96, 112)), 2, mode="nearest")
    level = np.floor(np.where(field < 0.68, 0, field) * 255).astype(np.uint8)
    level[20:80, 30:90] = 0  # a flat area whose centre is more than 20 pixels from any edge
    edges = np.asarray(jax.jit(lambda x: spatter.canny(x, 50, 150))(jnp.asarray(level, jnp.int32)))
    want = cv2.Canny(level, 50, 150) > 0
    assert want.sum() > 100 and np.array_equal(edges, want)
    got = np.asarray(jax.jit(spatter.chamfer_distance)(jnp.asarray(want)))
    ref = np.minimum(cv2.distanceTransform((~want).astype(np.uint8), cv2.DIST_L2, 5), 20)
    assert ref.max() == 20 and (ref < 20).sum() > 1000  # distances far from the edges are capped
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------- random


def _ref(fn_name, img, severity, seed):
    from PIL import Image
    ref_module = pytest.importorskip("imagecorruptions.corruptions")
    np.random.seed(seed)
    return np.uint8(getattr(ref_module, fn_name)(Image.fromarray(img), severity)).astype(int)


def _replay_fog(img, severity):
    h, w = img.shape[:2]
    size = weather.fog_map_size(h, w)
    uniforms = [jnp.asarray(np.random.uniform(0, 1, s), jnp.float32) for s in weather.plasma_draw_shapes(size)]
    plasma = weather.plasma_fractal(uniforms, size, weather.FOG[severity - 1][1])
    return weather.fog_from_plasma(_float(img), plasma, severity)


def _replay_snow(img, severity):
    mean, std = weather.SNOW[severity - 1][:2]
    flakes = np.random.normal(size=img.shape[:2], loc=mean, scale=std)
    angle = np.random.uniform(-135, -45)
    return weather.snow_from_draws(_float(img), jnp.asarray(flakes, jnp.float32), jnp.float32(angle), severity)


def _replay_spatter(img, severity):
    mean, std = spatter.SPATTER[severity - 1][:2]
    noise = np.random.normal(size=img.shape[:2], loc=mean, scale=std)
    return spatter.spatter_from_noise(_float(img), jnp.asarray(noise, jnp.float32), severity)


def _replay_elastic(img, severity):
    h, w = img.shape[:2]
    noise = [jnp.asarray(np.random.uniform(-h * 0.005, h * 0.005, (h, w)), jnp.float32) for _ in range(2)]
    return elastic.elastic_from_noise(_float(img), *noise, severity)


def _replay_frost(img, severity):
    h, w = img.shape[:2]
    index = np.random.randint(6)
    texture = frost_textures.load_textures(str(frost_textures.frost_dir()))[index]
    texture = resample.cv2_resize_cubic_uint8(texture, *frost_textures.resized_shape(texture.shape, (h, w)))
    row, col = np.random.randint(0, texture.shape[0] - h), np.random.randint(0, texture.shape[1] - w)
    return weather.frost_from_crop(_float(img), jnp.asarray(texture[row:row + h, col:col + w]), severity)


# corruption -> (replay, max levels, mean levels)
RANDOM = {
    "fog": (_replay_fog, 1, 0.01),
    "snow": (_replay_snow, 1, 0.01),
    "spatter": (_replay_spatter, 1, 0.01),
    "elastic_transform": (_replay_elastic, 1, 0.01),
    "frost": (_replay_frost, 1, 0.05),
}


def _random_parity(name, cases):
    pytest.importorskip("imagecorruptions")
    if name == "frost":
        pytest.importorskip("cv2")
    replay, max_bound, mean_bound = RANDOM[name]
    for size, severity in cases:
        img = IMAGES[size]
        seed = 10 * severity + size[0]
        ref = _ref(name, img, severity, seed)
        np.random.seed(seed)
        out = _levels(replay(img, severity))
        diff = np.abs(out - ref)
        assert diff.max() <= max_bound and diff.mean() <= mean_bound, (name, size, severity, diff.max(), diff.mean())
        assert np.abs(ref - img).mean() > 0.5


# spatter: one water (Canny/distance) and one mud severity
RANDOM_FAST = {"spatter": [((32, 32), 2), ((32, 32), 4)]}


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_parity_with_replayed_draws(name):
    _random_parity(name, RANDOM_FAST.get(name, [((32, 32), 3)]))


@pytest.mark.slow
@pytest.mark.heavy  # every size x severity (minutes); test_random_parity_with_replayed_draws checks one case each
@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_parity_all_severities(name):
    _random_parity(name, ALL_CASES)


# corruption -> relative tolerance on the mean absolute change (severity 5, 4 images x 12 draws)
STATISTICS = {"fog": 0.05, "snow": 0.05, "elastic_transform": 0.05, "spatter": 0.15, "frost": 0.15}


@pytest.mark.parametrize("name", sorted(STATISTICS))
def test_random_public_function_statistics(name):
    """The public function (JAX randomness, jitted, batched) changes images as much as the reference
    does on average; and different keys give different corruptions."""
    ic = pytest.importorskip("imagecorruptions")
    images = np.stack([_image(32, 32, seed=s) for s in range(4)])
    repeats = 12
    batch = jnp.asarray(np.tile(images, (repeats, 1, 1, 1)) / 255.0, jnp.float32)
    out = jax.jit(lambda k, x: corrupt(k, x, name, 5))(jax.random.key(0), batch)
    change = float(jnp.mean(jnp.abs(out - batch)))
    np.random.seed(0)
    ref = np.mean([np.abs(ic.corrupt(im, 5, name) / 255.0 - im / 255.0).mean()
                   for _ in range(repeats) for im in images])
    assert abs(change - ref) <= STATISTICS[name] * ref, (change, ref)
    assert float(jnp.abs(out[0] - out[4]).max()) > 0  # same image, different draws


# ------------------------------------------------------------------------------------- frost files


def test_frost_texture_lookup(tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.setattr(frost_textures.importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv(frost_textures.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match="pip install imagecorruptions-imaug"):
        frost_textures.frost_dir()
    r = np.random.default_rng(0)
    shapes = [(20, 30), (40, 25), (50, 60), (18, 18), (64, 40), (30, 30)]
    for name, shape in zip(frost_textures.FILENAMES, shapes):
        Image.fromarray(r.integers(0, 256, shape + (3,)).astype(np.uint8)).save(tmp_path / name)
    monkeypatch.setenv(frost_textures.ENV_VAR, str(tmp_path))
    assert frost_textures.frost_dir() == tmp_path
    stack, sizes = frost_textures.resized_textures(32, 32)
    expected = [frost_textures.resized_shape(s, (32, 32)) for s in shapes]
    assert [tuple(s) for s in sizes] == expected  # e.g. (20, 30) -> scale max(32/20, 32/30) * 1.1
    # (50, 60) covers 32 x 32 already: scale 1.1, and 50 * 1.1 = 55.000000000000007 rounds up to 56
    assert expected[0] == (36, 53) and expected[2] == (56, 66)
    crop = weather.frost_crop(jax.random.key(1), 32, 32, directory=tmp_path)
    assert crop.shape == (32, 32, 3)
    hits = [any(np.array_equal(stack[i, y:y + 32, x:x + 32], crop)
                for y in range(sizes[i][0] - 32) for x in range(sizes[i][1] - 32)) for i in range(6)]
    assert any(hits)  # the window lies inside the real part of one texture
