"""A small f4 VQGAN on CIFAR-10 (32x32x3), for DAT on CIFAR-10.

    tfds build cifar10
    python main.py --config configs/vqgan_cifar10.py --workdir runs/vqgan_cifar10
    python main.py --config configs/vqgan_cifar10.py --workdir runs/vqgan_cifar10_subset \
        --config.data.name=npz:/path/to/cifar10_subset.npz        # any npz with x_train/y_train, x_test/y_test
    python main.py --config configs/vqgan_cifar10.py:smoke --workdir /tmp/smoke   # fake data, seconds

taming's architecture at width 64: ch_mult (1, 2, 2) (32x32 -> 8x8 codes), two residual blocks per level,
attention at 8x8, 1024 codes of dimension 4 (latent-diffusion's f8 uses dim 4 too). L1 + codebook loss
and taming's PatchGAN (3 layers, hinge, adaptive weight, disc_weight 0.8 from step 5000 — half of taming's
ImageNet start, scaled to the smaller set). Adam b1 0.5, b2 0.9, lr 4.5e-6 x 128 = 5.8e-4, 100 epochs.
Not run to the end here (2 CPU cores); a run on the 5,000-image subset is in README.md with its PSNR and
codebook usage (%).
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, ('smoke',), config=__name__)
    c = common.base()
    c.data.update(name="cifar10", num_classes=10, image_size=32, train_augment="flip")
    c.method.name = "vqgan"
    c.vqgan = common.vqgan_training(arch="openimages_f8_16384",
                                    arch_kwargs=dict(ch=64, ch_mult=(1, 2, 2), num_res_blocks=2,
                                                     attn_resolutions=(8,), resolution=32, n_embed=1024),
                                    disc_weight=0.8, disc_start=5000, disc_layers=3)
    c.optim.update(name="adamw", lr=4.5e-6 * 128, b1=0.5, b2=0.9, weight_decay=0.0, schedule="constant")
    c.train.update(batch_size=128, epochs=100, log_every=50, eval_every=0, eval_examples=1000, checkpoint_every=1000)
    c.eval.update(batch_size=250, num_examples=1000)
    if "smoke" in args:
        c.data.update(name="fake:32x32x3:10")
        # the config's wiring (3-channel 32 px data, the trainer) at the smallest VQGAN: one down-sampling, no
        # attention (the VQGAN's parity tests cover the full architecture)
        c.vqgan.arch_kwargs.update(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), n_embed=16)
        c.vqgan.update(disc_weight=0.0)  # the reconstruction path only: vqgan_digits' smoke runs the PatchGAN
        c.train.update(batch_size=8, epochs=0, num_steps=2, log_every=1, checkpoint_every=0)
        c.eval.update(batch_size=8, num_examples=16)
    return common.lock(c)
