"""The evaluation engine behind `robust_jax.evaluate` (see docs/evaluation.md).

  suite.py            suite entries parsed from `eval.suite`
  runner.py           `run_suite` / `run_suite_detailed`: the suite's tasks, each over its data
  tasks/              one module per task (attacks, autoattack, corruptions, corrupted_tfds, shift_sets), the
                      registry TASKS, and the `Context` they share
  chunks.py           per-chunk results saved atomically under `<workdir>/eval/`, skipped on resume
  attack_eval.py      clean / fgsm / pgd-K / cw-K in one compiled step
  autoattack_eval.py  AutoAttack per chunk
  corruption_eval.py  corruptions on the fly, and the prepared TFDS corrupted sets
  forward_eval.py     top-1 with a label map and a logit mask (shift sets, TFDS corrupted sets)
  shift_sets.py       ImageNet-R/-A/-Sketch/-V2/Stylized specs, wnid mapping, class masks
  bn_branch.py        which BN set a dual-BN model is evaluated with
  mce.py              corruption error, mCE, relative mCE
  report.py           report.json / report.md / plots

The command-line tools over finished runs (compare, visual words, AdvBN features) are in `robust_jax.tools`.
"""
