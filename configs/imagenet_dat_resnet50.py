"""DAT with ResNet-50 on ImageNet (torchvision layout): our recipe, the reference publishes none.

    robust-jax-convert --model vqgan:openimages_f8_16384 --input vqgan_openimages_f8_16384.ckpt \
        --output vqgan_f8.msgpack
    tfds build imagenet2012
    python main.py --config configs/imagenet_dat_resnet50.py --workdir runs/in_dat_r50 \
        --config.method.vqgan.checkpoint=vqgan_f8.msgpack
    python main.py --config configs/imagenet_dat_resnet50.py:smoke --workdir /tmp/smoke   # CPU, seconds

The paper trains ResNet-50 with "the standard recipe"; the reference has no ResNet-50 script, so this is our
choice: SGD lr 0.1 x batch/256, momentum 0.9, wd 1e-4 (kernels only), batch 512, 100 epochs cosine with 5
warm-up epochs, label smoothing 0.1, inception crop 224 + flip; resize 256 + center crop 224 for evaluation.
DAT exactly as the ViT recipe: one-step L2 attack with eps = step = 0.1, random start with probability 0.8,
model in train mode (BatchNorm batch statistics), OpenImages f8 16384 VQGAN, losses summed 1:1.
Published (easyrobust README, ResNet-50 DAT, official model): ImageNet 76.52%, V2 65.02%, C mCE 74.16
(lower is better), R 41.90%, A 4.38%, Sketch 27.27%, Stylized 10.8%. Not run here (no accelerator, no ImageNet).
"""
from configs import common


def get_config(arg=None):
    args = common.parse_args(arg, ('smoke',), config=__name__)
    c = common.base()
    common.imagenet(c)
    c.model.name = "resnet50"
    c.method.update(name="dat", label_smoothing=0.1)
    c.method.attack = common.attack(norm="l2", eps=0.1, step_size=0.1, steps=1, random_start="none",
                                    train_mode=True)
    c.method.vqgan.update(checkpoint="vqgan_f8.msgpack", name="openimages_f8_16384")
    batch = 512
    c.optim.update(name="sgd", lr=0.1 * batch / 256, momentum=0.9, weight_decay=1e-4, weight_decay_on="kernels",
                   schedule="cosine", warmup_epochs=5.0)
    c.train.update(batch_size=batch, epochs=100, log_every=100, eval_every=12_510, eval_suite="clean",
                   eval_examples=10_000, checkpoint_every=2502)
    c.eval.update(batch_size=500, norm="linf", eps=1 / 255, step_size=0.25 / 255, suite="clean,corrupted_tfds",
                  curve_eps=())
    if "smoke" in args:
        common.smoke(c, image="64x64x3", num_classes=1000, model_kwargs={"stage_sizes": (1, 1, 1, 1), "width": 16})
        c.data.update(eval_split="test", image_size=56)
        c.optim.warmup_epochs = 0.0
        c.method.vqgan.update(checkpoint="random-init", name="openimages_f8_16384",
                              kwargs=dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                                          resolution=64, n_embed=32))
    return common.lock(c)
