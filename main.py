"""robust_jax command line: train or evaluate a config.

    python main.py --config configs/default.py --workdir runs/default [--mode train|eval]
    python main.py --config configs/cifar10_pgd_at.py:smoke --config.train.batch_size=64 ...

The work lives in `robust_jax.trainers` (classifiers: `robust_jax.train.train_and_evaluate` and
`robust_jax.evaluate.evaluate`, which notebooks call directly).
"""
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with an argument: path.py:arg.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and reports (resumed if present).")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (then evaluate) or evaluate only.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # progress bars and results only, unless -v/--verbosity asks for more
        logging.set_verbosity(logging.WARNING)
    from robust_jax import trainers

    if FLAGS.mode == "train":
        trainers.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
        trainers.evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
