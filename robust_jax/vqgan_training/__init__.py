"""VQGAN training (taming's objective without LPIPS), so that DAT works on any dataset without a download.

    python main.py --config configs/vqgan_digits.py --workdir runs/vqgan_digits
    model, variables = robust_jax.models.vqgan_io.load_trained("runs/vqgan_digits")

See docs/vqgan_training.md.
"""
from robust_jax.vqgan_training.objective import VQGANObjective
from robust_jax.vqgan_training.run import evaluate_vqgan, train_vqgan

__all__ = ["VQGANObjective", "evaluate_vqgan", "train_vqgan"]
