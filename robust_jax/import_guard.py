"""`skipped_import(name)`: while it is active, `import name` raises ImportError, so that a package we import
takes its own path for a missing optional module instead of loading one we never use.

tensorboardX imports torch whenever torch is installed (only to accept torch tensors; we log floats), and
TensorFlow 2.21 imports Keras's optimizers when it is imported (only to register them for SavedModel
loading; tf.data needs no Keras). Both catch the ImportError. On 2 CPU cores that is 2 s of every run's
start for torch and 1.5 s of TensorFlow's 4.9 s import for Keras. Afterwards the module imports as usual,
and a module already loaded is left alone (the package then uses it as it would anyway).
"""
import contextlib
import sys


@contextlib.contextmanager
def skipped_import(name: str):
    """Makes `import name` fail inside the block, unless `name` is loaded already."""
    if name in sys.modules:
        yield
        return
    sys.modules[name] = None  # the import system's "import of <name> halted" entry
    try:
        yield
    finally:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
