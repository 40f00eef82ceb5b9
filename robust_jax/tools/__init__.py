"""Command-line tools over trained runs, each also callable from Python (e.g. a notebook):

  compare.py          side-by-side reports of several runs (`python -m robust_jax.tools.compare RUN_DIR...`)
  visual_words.py     DAT's visual words: reconstructions, adversarial discrete images, flipped codes
  advbn_features.py   AdvBN's adversarial feature statistics: factors, feature maps, decoded images
  trained_run.py      what the picture tools read: a config file, a run's latest variables and eval images
"""
