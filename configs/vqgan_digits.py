"""A small VQGAN on the embedded digits (no download): the quantiser of configs/digits_dat.py.

    python main.py --config configs/vqgan_digits.py --workdir runs/vqgan_digits
    python main.py --config configs/vqgan_digits.py:smoke --workdir /tmp/smoke   # seconds, for tests

taming's VQGAN architecture at small width: ch 32, one downsampling (16x16x1 digits -> 8x8 codes), one
residual block per level, attention at 8x8, 128 codes of dimension 4. Loss: L1 + codebook/commitment
(legacy beta 0.25), no discriminator (vqgan.disc_weight=0.1 turns taming's PatchGAN term on). Adam
(b1 0.5, b2 0.9, taming's) at lr 3e-4 = taming's 4.5e-6 x batch 64, 40 epochs.
Writes runs/vqgan_digits/{vqgan.msgpack, vqgan_model.json, reconstructions.png, report.md}.
Expected: see README.md (DAT section) for the measured PSNR, codebook usage (%) and time.
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, ('smoke',), config=__name__)
    c = common.base()
    c.data.update(name="digits", num_classes=10, image_size=16, train_augment="none")
    c.method.name = "vqgan"
    c.vqgan = common.vqgan_training(arch="openimages_f8_16384",
                                    arch_kwargs=dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                                                     resolution=16, n_embed=128))
    c.optim.update(name="adamw", lr=3e-4, b1=0.5, b2=0.9, weight_decay=0.0, schedule="constant")
    c.train.update(batch_size=64, epochs=40, log_every=22, eval_every=0, eval_examples=360, checkpoint_every=220)
    c.eval.update(batch_size=180)
    if "smoke" in args:
        c.vqgan.arch_kwargs.update(num_res_blocks=1, n_embed=16)
        # the PatchGAN path without the adaptive weight (its extra gradients double the compile time; the
        # objective's tests cover it)
        c.vqgan.update(disc_weight=0.1, disc_layers=2, disc_channels=8, disc_start=1, adaptive_weight=False)
        c.train.update(batch_size=8, epochs=0, num_steps=2, log_every=1, checkpoint_every=0)
        c.eval.update(batch_size=8, num_examples=16)
    return common.lock(c)
