"""The frost photographs that ImageNet-C's `frost` corruption blends into images, found and prepared on
the host.

The textures (frost1.png .. frost3.png, frost4.jpg .. frost6.jpg) are photographs distributed with the
`imagecorruptions` package; robust_jax does not ship them. They are looked up, in order, in
(1) the `directory` argument, (2) the directory named by the environment variable `ROBUST_JAX_FROST_DIR`,
(3) the `frost/` folder of an installed `imagecorruptions` package (`pip install imagecorruptions-imaug`).

The reference (per image) picks one texture at random, upscales it with `cv2.resize(INTER_CUBIC)` by
1.1 x (the factor that makes it cover the image, or 1), and crops a random window of the image's size.
The resized textures depend only on the image size, so `resized_textures(h, w)` computes them once per
size on the host (`resample.cv2_resize_cubic_uint8`) and stacks them, zero-padded to a common shape,
with their true sizes; the random choice and crop then run in JAX (see `weather.frost`).
"""
from __future__ import annotations

import functools
import importlib.util
import math
import os
from pathlib import Path

import numpy as np

from robust_jax.corruptions import resample

FILENAMES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
ENV_VAR = "ROBUST_JAX_FROST_DIR"


def frost_dir(directory: str | os.PathLike | None = None) -> Path:
    """The folder holding the six frost textures (argument, then $ROBUST_JAX_FROST_DIR, then the
    installed `imagecorruptions` package); FileNotFoundError saying how to get them otherwise."""
    candidates = []
    if directory is not None:
        candidates.append(Path(directory))
    if os.environ.get(ENV_VAR):
        candidates.append(Path(os.environ[ENV_VAR]))
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(p) / "frost" for p in spec.submodule_search_locations)
    for folder in candidates:
        if all((folder / name).is_file() for name in FILENAMES):
            return folder
    looked = ", ".join(str(c) for c in candidates) or "nowhere"
    raise FileNotFoundError(
        "The frost corruption needs the six frost texture photographs of ImageNet-C "
        f"({', '.join(FILENAMES)}), which robust_jax does not ship. Install them with "
        f"`pip install imagecorruptions-imaug`, or set {ENV_VAR} to a folder holding those files "
        f"(looked in: {looked}).")


@functools.lru_cache(maxsize=4)
def load_textures(directory: str) -> tuple[np.ndarray, ...]:
    """The six textures as uint8 RGB arrays `[h, w, 3]` (alpha dropped, as cv2.imread does)."""
    from PIL import Image
    return tuple(np.asarray(Image.open(Path(directory) / name).convert("RGB")) for name in FILENAMES)


def resized_shape(texture_shape, image_shape) -> tuple[int, int]:
    """The reference's texture size (rows, cols) for an image of `image_shape`: the smallest scale that
    makes the texture cover the image (1 if it already does), times 1.1, rounded up."""
    th, tw = texture_shape[:2]
    ih, iw = image_shape[:2]
    if th >= ih and tw >= iw:
        scale = 1.0
    elif tw >= iw:
        scale = ih / th
    elif th >= ih:
        scale = iw / tw
    else:
        scale = max(ih / th, iw / tw)
    scale *= 1.1
    return math.ceil(th * scale), math.ceil(tw * scale)


@functools.lru_cache(maxsize=8)
def _resized(h: int, w: int, directory: str):
    textures = [resample.cv2_resize_cubic_uint8(t, *resized_shape(t.shape, (h, w)))
                for t in load_textures(directory)]
    sizes = np.array([t.shape[:2] for t in textures], np.int32)
    stack = np.zeros((len(textures), sizes[:, 0].max(), sizes[:, 1].max(), 3), np.uint8)
    for i, t in enumerate(textures):
        stack[i, :t.shape[0], :t.shape[1]] = t
    return stack, sizes


def resized_textures(h: int, w: int, directory: str | os.PathLike | None = None):
    """`(stack uint8 [6, Hmax, Wmax, 3], sizes int32 [6, 2])`: the textures resized for `h` x `w` images
    as the reference does, zero-padded to a common shape (only `[:rows, :cols]` of each is real)."""
    return _resized(int(h), int(w), str(frost_dir(directory)))


@functools.lru_cache(maxsize=4)
def _cifar(directory: str):
    from robust_jax.corruptions import params as params_lib

    textures = []
    for t in load_textures(directory)[:params_lib.CIFAR_FROST_TEXTURES]:
        rows, cols = (int(np.rint(n * params_lib.CIFAR_FROST_SCALE)) for n in t.shape[:2])
        textures.append(t[2::5, 2::5][:rows, :cols])
    sizes = np.array([t.shape[:2] for t in textures], np.int32)
    stack = np.zeros((len(textures), sizes[:, 0].max(), sizes[:, 1].max(), 3), np.uint8)
    for i, t in enumerate(textures):
        stack[i, :t.shape[0], :t.shape[1]] = t
    return stack, sizes


def cifar_textures(directory: str | os.PathLike | None = None):
    """CIFAR-10-C's textures: the first five (its `randint(5)`), each `cv2.resize(fx=fy=0.2)` (bilinear).
    At the exact factor 5 OpenCV's bilinear source coordinate `(i + 0.5) * 5 - 0.5 = 5 i + 2` is an
    integer, so the resize is the subsampling `texture[2::5, 2::5]` cut to `round(0.2 * side)` (checked
    against cv2 in tests/test_corruptions_cifar.py). Same `(stack, sizes)` layout as `resized_textures`."""
    return _cifar(str(frost_dir(directory)))
