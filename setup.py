"""robust_jax: robust image classification in JAX/Flax.

Install for use:            pip install -e .
Install with test tools:    pip install -e .[test]
Add PyTorch parity refs:    pip install -e .[test,parity]   (torch, timm, easyrobust, taming, pyautoattack, imagecorruptions)
"""
from setuptools import find_packages, setup

# Version ranges are the ones tested here (jax 0.10.2, flax 0.12.8, ...). Widen only after testing.
INSTALL_REQUIRES = [
    "jax>=0.10.0,<0.11",
    "jaxlib>=0.10.0,<0.11",
    "flax>=0.12.0,<0.13",
    "optax>=0.2.5,<0.3",
    "orbax-checkpoint>=0.12.0,<0.13",
    "chex>=0.1.90,<0.2",
    "ml-collections>=1.0,<2",
    "absl-py>=2.1,<3",
    "numpy>=2.0,<3",
    # jax's and TF's dtype extension. 0.7.0 registers its ufunc loops in ~0.75 s at import (numpy's
    # PyUFunc_AddLoop scans the loops already registered: quadratic), 0.6.0 in 5 ms; every process that imports
    # jax pays it (`import jax`: 2.2 s with 0.7.0, 0.95 s with 0.6.0 on 2-core Zen 3 + numpy 2.4).
    "ml-dtypes>=0.5.1,<0.7",
    "tensorflow-cpu>=2.19,<2.22",  # tf.data only; JAX does the compute
    "tensorflow-datasets>=4.9.8,<5",
    "tqdm>=4.66,<5",
    "matplotlib>=3.9,<4",
    "scikit-learn>=1.5,<2",  # ships the embedded `digits` dataset
    "tensorboardX>=2.6,<3",
    "pillow>=10",
]

EXTRAS = {
    "test": [
        "pytest>=8,<10",
        "pytest-xdist>=3.5,<4",  # `-n 3 --dist loadfile`: three workers keep 2 cores busy (README "Tests")
        "nbclient>=0.10,<0.12",
        "nbformat>=5.10,<6",
        "ipykernel>=6.29,<8",
        "filelock>=3.12,<5",  # the test session's shared JAX compilation cache locks its entries (conftest.py)
    ],
    # PyTorch references for parity tests and benchmarks (heavy, ~5.5 GB with torch's CUDA libraries;
    # CI installs them once). torch 2.14.1 + torchvision 0.29.1 because timm needs torchvision, and the
    # 0.28.0 wheel here does not load against the torch 2.13.0 CPU wheel (torchvision::nms missing).
    "parity": [
        "torch==2.14.1",
        "torchvision==0.29.1",
        # DAT references: easyrobust's VQGAN copy and PGD generator (pins timm==0.5.4, used for the ViT
        # parity too); taming's Encoder/Decoder/VectorQuantizer2 modules.
        "easyrobust==0.2.4",
        "taming-transformers-rom1504==0.0.6",
        "lpips==0.1.4",  # LPIPS-VGG reference (its lin weights ship in the package) for the VQGAN perceptual loss
        "pyautoattack==0.2.0",
        # imagecorruptions 1.1.2 no longer runs on current numpy/scikit-image; the maintained fork keeps
        # the module name `imagecorruptions` (pulls numba, opencv-python, scikit-image).
        "imagecorruptions-imaug==1.1.5",
        "opencv-python-headless>=4.8",
    ],
}

setup(
    name="robust_jax",
    version="0.1.0",
    description="Robust image classification in JAX/Flax: PGD-AT/TRADES/MART, DAT, AdvBN, AutoAttack, corruptions",
    packages=find_packages(include=["robust_jax", "robust_jax.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "robust-jax-convert=robust_jax.models.convert.cli:main",
        ]
    },
)
