"""Field layout shared by every config; recipes override values, never add ad-hoc keys.

Each recipe file calls `base()` and sets what differs, then `lock()`s the result so that a typo in
`--config.field=value` is an error. `config.method` is composed of the blocks the methods declare next to
their losses (`robust_jax.methods.config_defaults()`); recipe arguments (`file.py:arg1,arg2`) are parsed
strictly by `parse_args`.
"""
import ml_collections

from robust_jax import methods

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def attack(**kw):
    """The attack a method trains against (`robust_jax.methods.PGDAttack`'s fields: pgd keyword arguments +
    the model mode it sees); random_start: 'uniform' (in the eps-ball), 'normal' (x + 0.001 N(0,I),
    TRADES/MART) or 'none'. ViT recipes (PGD-AT/TRADES/MART only, off by default): ard, prm, prm_patch (0 = the
    model's patch size), keep_max and keep_warmup_epochs (the ARD/PRM keep-probability schedule; docs/vit.md)."""
    a = ml_collections.ConfigDict(methods.config_defaults()["attack"])
    a.update(kw)
    return a


def parse_args(arg, known, *, config: str):
    """The set of comma-separated recipe arguments in `arg` ('' or None: none); an argument that is not in
    `known` is an error naming the known ones (a typo such as ':smok' must not run the full recipe)."""
    args = {a.strip() for a in (arg or "").split(",") if a.strip()}
    unknown = sorted(args - set(known))
    if unknown:
        raise ValueError(f"{config}: unknown config argument(s) {', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(sorted(known)) or 'none'}")
    return args


def base():
    c = ml_collections.ConfigDict()
    c.seed = 0
    # xla_cpu_fast_conv: on a CPU backend, compile the train/eval/AutoAttack programs with convolutions on
    #   XLA:CPU's Eigen path instead of YNNPACK (1.2-1.4x faster PGD-AT measured) and XLA's own loops at LLVM -O1
    #   (quicker compiles, same values; robust_jax.compile_options). Only speed and the last bits of convolutions
    #   change; env ROBUST_JAX_XLA_CPU_FAST_CONV=0 also turns it off.
    c.xla_cpu_fast_conv = True
    c.data = dict(name="digits", train_split="train", eval_split="test", num_classes=0, image_size=0,
                  train_augment="none", eval_preprocess="none", crop_padding=4, shuffle_buffer=50_000,
                  cache=True, data_dir="", eval_subset="first", randaugment="", random_erasing=0.0)
    # randaugment: timm policy string, e.g. 'rand-m9-mstd0.5-inc1' (DeiT), '' = off; random_erasing: the
    #   probability of timm's RandomErasing (mode 'pixel', one box) on training images, 0 = off.
    # eval_subset: with eval.num_examples set, evaluate the 'first' examples or a 'spread' (every k-th one;
    #   use it on splits stored sorted by class, such as ../shared/data/cifar10_subset.npz).
    # bn: BatchNorm statistics, 'sync' (global batch) or 'ghost:N' (per group of N examples: set N to the
    #   per-GPU batch of a DataParallel/DDP reference to reproduce it); dtype: compute dtype, params stay f32.
    # init_from: a variables file (.msgpack) or a training workdir to start from (single BN -> both sets of
    #   a dual-BN model).
    c.model = dict(name="small_cnn", mean=(0.5,), std=(0.5,), init_from="", kwargs=ml_collections.ConfigDict(),
                   bn="sync", dtype="float32")
    # method: `name` and the fields of every method's block, declared next to its loss (methods/<name>.py:
    #   attack, beta, mixup_alpha/cutmix_alpha/label_smoothing, vqgan + dat (DAT), advbn (AdvBN)).
    c.method = dict(name="standard", **methods.config_defaults())
    c.optim = dict(name="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4, weight_decay_on="all",
                   schedule="piecewise", decay_epochs=(), decay_factor=0.1, warmup_epochs=0.0, grad_clip=0.0,
                   ema_decay=0.0, b1=0.9, b2=0.999, warmup_init_lr=0.0, min_lr=0.0)
    # warmup_init_lr: the warm-up starts here (timm: warmup_lr 1e-6); min_lr: the cosine schedule's floor.
    c.train = dict(batch_size=128, epochs=1.0, num_steps=0, log_every=50, eval_every=0, eval_suite="clean,pgd-10",
                   eval_examples=1000, checkpoint_every=0, checkpoint_minutes=10.0, keep_checkpoints=2,
                   select_best="")
    # Checkpoints (workdir/checkpoints, resumed automatically): saved every checkpoint_minutes of wall time,
    #   every checkpoint_every steps, at each periodic evaluation (eval_every) and at the end, whichever comes
    #   first (0 turns the time or step trigger off); SIGINT/SIGTERM save the current step and stop.
    #   keep_checkpoints: how many orbax keeps (an older one is the fallback when the newest is damaged).
    # select_best: '' = evaluate the last state; a periodic-evaluation metric (e.g. 'clean') = keep and evaluate
    #   the state that scored best every eval_every steps and at the end (workdir/best_checkpoint).
    # eval: see docs/evaluation.md. suite entries: clean, fgsm, pgd-K, cw-K, autoattack, corruptions,
    #   corrupted_tfds, shift_sets. chunk_size: examples per saved chunk (0 = one batch; a multiple of
    #   batch_size); results go to workdir/eval/ and an interrupted run resumes (resume=False: keep nothing).
    #   autoattack.norm/eps: ''/0.0 = eval.norm/eval.eps. corruptions.names: 'benchmark' (15, mCE) | 'extra'
    #   | 'all' | comma list; corruptions.params: severity parameters of the on-the-fly corruptions, 'auto'
    #   (CIFAR-10-C's for 32x32 images, else ImageNet-C's) | 'imagenet' | 'cifar'; tfds_builder: '' = from
    #   data.name (cifar10 -> cifar10_corrupted, imagenet2012 -> imagenet2012_corrupted); tfds_preprocess:
    #   '' = data.eval_preprocess (ImageNet-C's images are 224 px already: 'center_crop' keeps them as they are).
    #   shift_sets: {label: source or dict(source, split, labels, mask, preprocess, image_size)}; wnids_file:
    #   '' = TFDS's bundled ImageNet wnid list.
    c.eval = dict(split="", batch_size=250, num_examples=0, suite="clean,pgd-20,cw-20", norm="linf",
                  eps=8 / 255, step_size=2 / 255, curve_eps=(), curve_attack="pgd-20", checkpoint="",
                  use_ema=True, seed=0, chunk_size=0, resume=True, num_example_images=6,
                  autoattack=dict(version="standard", norm="", eps=0.0, seed=0, batch_size=500),
                  corruptions=dict(names="benchmark", severities=(1, 2, 3, 4, 5), seed=0, quantize=True,
                                   params="auto", tfds_builder="", tfds_preprocess=""),
                  shift_sets=ml_collections.ConfigDict(), wnids_file="", bn="clean")
    # bn: the BatchNorm set dual-BN models are evaluated with ('clean' | 'adv'); a shift set may name its own.
    return c


def imagenet(c, **data):
    """ImageNet-1k from TFDS at 224 px (inception crop + flip; resize 256 + center crop 224 for evaluation),
    the model normalising with the ImageNet mean/std; `data` overrides data fields."""
    c.data.update(dict(name="imagenet2012", train_split="train", eval_split="validation", num_classes=1000,
                       image_size=224, train_augment="inception_crop", eval_preprocess="resize_center_crop",
                       shuffle_buffer=50_000, cache=False), **data)
    c.model.update(mean=IMAGENET_MEAN, std=IMAGENET_STD)


def vqgan_training(**kw):
    """The `config.vqgan` block of VQGAN training runs (configs/vqgan_*.py; method.name = 'vqgan').
    arch: a robust_jax.models.vqgan.CONFIGS name, arch_kwargs: its fields overridden (in_channels/out_ch
    default to the data's). Loss (taming's, no LPIPS): rec_loss 'l1'|'l2' + codebook_weight * qloss; the
    PatchGAN term is on when disc_weight > 0, from step disc_start, with taming's adaptive weight unless
    adaptive_weight=False; disc_loss 'hinge'|'vanilla'; disc_layers/disc_channels: taming's n_layers/ndf;
    perceptual_weight > 0 adds LPIPS-VGG (taming: 1.0) with weights from lpips_weights (a converted msgpack)."""
    v = ml_collections.ConfigDict(dict(arch="openimages_f8_16384", arch_kwargs=ml_collections.ConfigDict(),
                                       rec_loss="l1", codebook_weight=1.0, disc_weight=0.0, disc_start=0,
                                       disc_factor=1.0, disc_loss="hinge", adaptive_weight=True, disc_layers=3,
                                       disc_channels=64, num_recon_images=8, perceptual_weight=0.0,
                                       lpips_weights=""))
    v.update(kw)
    return v


def lock(c):
    c.lock()
    return c


def smoke(c, *, image: str, num_classes: int = 10, model_kwargs=None):
    """Turns a recipe into a seconds-long CPU run on fake data with the same model/method/optimiser."""
    c.data.update(name=f"fake:{image}:{num_classes}", num_classes=num_classes, cache=True)
    if model_kwargs:
        c.model.kwargs = ml_collections.ConfigDict(model_kwargs)
    c.method.attack.steps = 2
    c.train.update(batch_size=8, epochs=0, num_steps=2, log_every=1, eval_every=0, checkpoint_every=0)
    c.eval.update(batch_size=8, num_examples=8, suite="clean,pgd-2", curve_eps=())
