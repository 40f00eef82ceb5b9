"""TensorFlow as the input pipeline uses it: imported here, once, by the modules of `robust_jax.data` that run
tf.data (never by the rest of the package), quiet, and without accelerators.

TF's C++ start-up lines (the oneDNN banner, CPU feature notes) are kept off the console unless
TF_CPP_MIN_LOG_LEVEL=0 asks for TF's native logging (JAX sets that variable to 1 on import): TF 2.21 writes
them to the process's stderr before its logging is configured, so the import and the runtime start run with
file descriptor 2 pointed at /dev/null (Python-level errors still raise as usual). TF is kept off GPUs:
tf.data only reads and augments, JAX computes. TF's import skips its eager import of Keras's optimizers
(robust_jax/import_guard.py): 3.4 s instead of 4.9 s on 2 CPU cores; Keras imports as usual afterwards.

The pipeline's `map` functions go through `without_autograph`: they branch only on Python values (kinds,
policies, sizes), so AutoGraph's source rewrite would only add its cost.
"""
import contextlib
import os
import sys

from robust_jax import import_guard


@contextlib.contextmanager
def _native_stderr_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_tf():
    with import_guard.skipped_import("keras.src.optimizers"):  # TF's eager Keras import (import_guard.py)
        import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")  # starts TF's runtime, which prints the banner
    return tf


if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
    tf = _import_tf()
else:
    with _native_stderr_silenced():
        tf = _import_tf()


def without_autograph(fn):
    """`fn` for `tf.data.Dataset.map`, traced as written instead of through AutoGraph, which would parse,
    rewrite and re-import its source and that of every function it calls: the first train and eval batches of
    the digits took 1.1-1.3 s with it, 0.2-0.3 s without (a fresh process, 2 CPU cores). A tensor-valued
    Python `if` in `fn` then raises when traced instead of being turned into `tf.cond`: write those with
    `tf.cond` / `tf.switch_case`."""
    return tf.autograph.experimental.do_not_convert(fn)


__all__ = ["tf", "without_autograph"]
