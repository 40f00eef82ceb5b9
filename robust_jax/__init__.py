"""robust_jax: robust image classification in JAX/Flax.

Submodules: `models` (Linen classifiers), `attacks` (PGD & co.), `methods` (training objectives),
`data` (tf.data pipelines), `train.train_and_evaluate`, `evaluate.evaluate`.
"""
__version__ = "0.1.0"
