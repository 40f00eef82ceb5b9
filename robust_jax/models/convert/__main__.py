"""`python -m robust_jax.models.convert ...` == `robust-jax-convert ...`."""
from robust_jax.models.convert.cli import main

raise SystemExit(main())
