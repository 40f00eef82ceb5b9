"""DAT with ViT-B/16 on ImageNet, trained from scratch: the published recipe (easyrobust's DAT README).

    robust-jax-convert --model vqgan:openimages_f8_16384 --input vqgan_openimages_f8_16384.ckpt \
        --output vqgan_f8.msgpack            # latent-diffusion's vq-f8 checkpoint, once
    tfds build imagenet2012                  # needs the ILSVRC2012 archives in the manual dir
    python main.py --config configs/imagenet_dat_vit_b16.py --workdir runs/in_dat_vit_b16 \
        --config.method.vqgan.checkpoint=vqgan_f8.msgpack
    python main.py --config configs/imagenet_dat_vit_b16.py:smoke --workdir /tmp/smoke   # CPU, seconds

DeiT recipe: 300 epochs, global batch 1024, AdamW lr 1e-3 (not scaled with the batch), wd 0.05 (not on
biases, norms, position embedding, class token), cosine with 5 warm-up epochs from 1e-6 to a 1e-6 floor,
drop-path 0.25, EMA 0.99992, RandAugment rand-m9-mstd0.5-inc1, mixup 0.8, cutmix 1.0 (one of the two per
batch), label smoothing 0.1, random erasing 0.25, mixed precision (bfloat16 compute), images in [0,1] with
the ImageNet mean/std applied inside the model. DAT: one-step L2 attack, eps = step = 0.1, random start with
probability 0.8, model in train mode, through the OpenImages f8 VQGAN (16384 codes, 28x28 codes at 224 px).
Differences, documented: the lr schedule moves every step (timm: every epoch); bfloat16 instead of float16
AMP; RandAugment's rotate/shear/translate resample bilinearly (DeiT: bicubic; docs/augmentation.md); random
erasing noise is clipped to [0,1]. Published (easyrobust README, ViT-B/16 DAT): ImageNet 81.46%, V2 70.83%, C mCE 44.65 (lower is
better), R 47.34%, A 30.15%, Sketch 34.77%, Stylized 23.13%. Not run here (no accelerator, no ImageNet).
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, ('smoke',), config=__name__)
    c = common.base()
    common.imagenet(c, randaugment="rand-m9-mstd0.5-inc1", random_erasing=0.25)
    c.model.update(name="vit_b16", dtype="bfloat16", kwargs={"drop_path_rate": 0.25})
    c.method.update(name="dat", label_smoothing=0.1, mixup_alpha=0.8, cutmix_alpha=1.0)
    c.method.attack = common.attack(norm="l2", eps=0.1, step_size=0.1, steps=1, random_start="none",
                                    train_mode=True)
    c.method.vqgan.update(checkpoint="vqgan_f8.msgpack", name="openimages_f8_16384")
    c.method.dat.update(variant="reference", start_prob=0.8)
    c.optim.update(name="adamw", lr=1e-3, weight_decay=0.05, weight_decay_on="kernels", b1=0.9, b2=0.999,
                   schedule="cosine", warmup_epochs=5.0, warmup_init_lr=1e-6, min_lr=1e-6, ema_decay=0.99992)
    c.train.update(batch_size=1024, epochs=300, log_every=100, eval_every=6255, eval_suite="clean",
                   eval_examples=10_000, checkpoint_every=1251)
    c.eval.update(batch_size=500, norm="linf", eps=1 / 255, step_size=0.25 / 255, suite="clean,corrupted_tfds",
                  curve_eps=())
    if "smoke" in args:
        common.smoke(c, image="32x32x3", num_classes=1000,
                     model_kwargs={"image_size": 32, "patch_size": 8, "hidden_dim": 32, "depth": 2, "num_heads": 2,
                                   "drop_path_rate": 0.25})
        c.model.update(name="vit", dtype="float32")
        c.data.update(image_size=32, eval_split="test")  # RandAugment and random erasing stay on
        c.optim.warmup_epochs = 0.0
        c.method.vqgan.update(checkpoint="random-init", name="openimages_f8_16384",
                              kwargs=dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,),
                                          resolution=32, n_embed=32))
    return common.lock(c)
