"""robust_jax: robust image classification in JAX/Flax.

Library pieces (jax/flax/optax only): `models` (Linen classifiers), `attacks` (PGD, APGD, FAB, Square,
AutoAttack), `methods` (training objectives as pure loss functions), `corruptions` (ImageNet-C on the
device), `mixing` (mixup/cutmix). Runs: `data` (tf.data pipelines; TensorFlow on first use),
`trainers.train_and_evaluate` / `trainers.evaluate` (what main.py runs). See docs/library.md.
"""
__version__ = "0.1.0"
