"""DAT (discrete adversarial training) on the embedded digits, with a VQGAN the project trains first.

    python main.py --config configs/vqgan_digits.py --workdir runs/vqgan_digits          # the VQGAN
    python main.py --config configs/digits_dat.py --workdir runs/digits_dat               # DAT
    python main.py --config configs/digits_dat.py:standard --workdir runs/digits_standard # baseline
    python -m robust_jax.tools.compare runs/digits_standard runs/digits_dat --output runs/dat_vs_standard

The small CNN of configs/default.py with its optimiser (SGD, cosine, 30 epochs, batch 64). DAT as the
reference runs it: clean loss + loss on Q(Q(x) + delta), one-step L2 attack with eps = step = 0.1 (the
paper's value on the [0,1] scale), random start with probability 0.8, attack on the model in train mode.
`method.vqgan.checkpoint` is the VQGAN training workdir. Evaluation: clean accuracy and the 14 benchmark
corruptions other than frost (frost needs ImageNet-C's textures) at severities 1-5 computed on the fly,
on the 360 held-out digits.
Expected: measured numbers are in README.md (DAT section) — clean about 98-99% for both, mean
corruption accuracy compared there.
Args: 'standard' trains the same model without DAT (the baseline); 'paper' uses the paper's Q(x + delta);
'smoke' runs two steps on fake data with an untrained VQGAN (plumbing only, for tests).
"""
from configs import common

CORRUPTIONS = ("gaussian_noise,shot_noise,impulse_noise,defocus_blur,glass_blur,motion_blur,zoom_blur,snow,fog,"
               "brightness,contrast,elastic_transform,pixelate,jpeg_compression")


def get_config(arg=None):
    args = common.parse_args(arg, ('standard', 'paper', 'smoke'), config=__name__)
    c = common.base()
    c.data.update(name="digits", num_classes=10, image_size=16, train_augment="crop", crop_padding=2)
    c.model.update(name="small_cnn", mean=(0.5,), std=(0.5,))
    c.method.name = "standard" if "standard" in args else "dat"
    c.method.attack = common.attack(norm="l2", eps=0.1, step_size=0.1, steps=1, random_start="none",
                                    train_mode=True)
    c.method.vqgan.checkpoint = "runs/vqgan_digits"
    c.method.dat.update(variant="paper" if "paper" in args else "reference", start_prob=0.8)
    c.optim.update(name="sgd", lr=0.2, momentum=0.9, weight_decay=5e-4, schedule="cosine", warmup_epochs=1.0)
    c.train.update(batch_size=64, epochs=30, log_every=22, eval_every=0, eval_suite="clean", eval_examples=360)
    c.eval.update(batch_size=180, norm="l2", eps=0.5, step_size=0.1, suite="clean,corruptions", curve_eps=())
    c.eval.corruptions.update(names=CORRUPTIONS, severities=(1, 2, 3, 4, 5))
    if "smoke" in args:
        common.smoke(c, image="16x16x1", model_kwargs=None)
        # vqgan_digits' smoke architecture: the DAT notebook's fast mode (that VQGAN, trained) reuses these programs
        c.method.vqgan.update(checkpoint="random-init", name="openimages_f8_16384",
                              kwargs=dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                                          resolution=16, n_embed=16, in_channels=1, out_ch=1))
    return common.lock(c)
