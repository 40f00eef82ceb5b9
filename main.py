"""robust_jax command line: train or evaluate a config.

    python main.py --config configs/default.py --workdir runs/default [--mode train|eval]
    python main.py --config configs/cifar10_pgd_at.py:smoke --config.train.batch_size=64 ...

The work lives in `robust_jax.trainers` (classifiers: `robust_jax.train.train_and_evaluate` and
`robust_jax.evaluate.evaluate`, which notebooks call directly). A mistake the user can fix — a bad or unknown
config value, a missing file, a workdir resumed with another config, a diverging run — is reported as one
paragraph on stderr (what, where, how to fix) with exit status 2; `--verbosity=1` adds the traceback
(`robust_jax.cli_errors`).
"""
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally with an argument: path.py:arg.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and reports (resumed if present).")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "train (then evaluate) or evaluate only.")
flags.DEFINE_bool("allow_config_change", False, "Resume a workdir whose saved config.json differs from --config "
                  "in fields that change training; the saved config is kept as config.<n>.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:  # progress bars and results only, unless -v/--verbosity asks for more
        logging.set_verbosity(logging.WARNING)
    from robust_jax import trainers

    if FLAGS.mode == "train":
        trainers.train_and_evaluate(FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change)
    else:
        trainers.evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    from robust_jax import cli_errors

    cli_errors.run(lambda: app.run(main, flags_parser=lambda argv: FLAGS(argv)))
