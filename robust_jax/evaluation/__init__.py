"""The evaluation engine behind `robust_jax.evaluate` (see docs/evaluation.md).

  suite.py            suite entries parsed from `eval.suite`
  runner.py           `run_suite` / `run_suite_detailed`: every task over its data, chunk by chunk
  chunks.py           per-chunk results saved atomically under `<workdir>/eval/`, skipped on resume
  attack_eval.py      clean / fgsm / pgd-K / cw-K in one compiled step
  autoattack_eval.py  AutoAttack per chunk
  corruption_eval.py  corruptions on the fly, and the prepared TFDS corrupted sets
  forward_eval.py     top-1 with a label map and a logit mask (shift sets, TFDS corrupted sets)
  shift_sets.py       ImageNet-R/-A/-Sketch/-V2/Stylized specs, wnid mapping, class masks
  mce.py              corruption error, mCE, relative mCE
  report.py           report.json / report.md / plots
"""
