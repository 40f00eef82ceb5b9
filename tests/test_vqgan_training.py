"""VQGAN training: the objective's gradient separation and adaptive weight, the PatchGAN against taming's,
training lowering the reconstruction loss, the files a run leaves and resuming them."""
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common, vqgan_digits
from robust_jax import trainers
from robust_jax.models import vqgan
from robust_jax.models.vqgan_io import load_trained
from robust_jax.vqgan_training import VQGANObjective
from robust_jax.vqgan_training.discriminator import PatchDiscriminator
from saved_runs import logged_metrics

ARCH = dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), resolution=16, n_embed=16,
            in_channels=1, out_ch=1)


def _objective(**kw):
    cfg = common.vqgan_training(**{**dict(disc_weight=0.5, disc_layers=2, disc_channels=8, disc_start=0), **kw})
    obj = VQGANObjective(vqgan.get("openimages_f8_16384", **ARCH), cfg)
    variables = obj.init(jax.random.key(0), (16, 16, 1))
    params = variables.pop("params")
    batch = {"image": jax.random.uniform(jax.random.key(1), (4, 16, 16, 1))}
    return obj, params, variables, batch


def test_gradient_of_the_sum_is_each_groups_own_gradient():
    obj, params, state, batch = _objective(adaptive_weight=False)
    grads = jax.jit(jax.grad(lambda p: obj.loss(p, state, batch, jax.random.key(2), 10)[0]))(params)

    def generator_loss(p_vq):
        out = obj.model.apply({"params": p_vq}, batch["image"], train=True)
        logits, _ = obj._disc(params["disc"], state["batch_stats"]["disc"], out["dec"])
        return (obj.reconstruction_loss(2 * batch["image"] - 1, out["dec"]) + out["qloss"]
                - 0.5 * jnp.mean(logits))

    def discriminator_loss(p_d):
        dec = obj.model.apply({"params": params["vqgan"]}, batch["image"], train=True)["dec"]
        stats = obj._disc(params["disc"], state["batch_stats"]["disc"], dec)[1]  # the generator pass's stats
        real, stats = obj._disc(p_d, stats, 2 * batch["image"] - 1)
        fake, _ = obj._disc(p_d, stats, dec)
        return obj.disc_loss(real, fake)

    # jitted: op-by-op, the three VQGAN gradients compile hundreds of small programs (minutes on 2 cores)
    wants = jax.jit(lambda p: (jax.grad(generator_loss)(p["vqgan"]), jax.grad(discriminator_loss)(p["disc"])))(params)
    for got, want in zip((grads["vqgan"], grads["disc"]), wants):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)


def test_adaptive_weight_equals_gradient_norms_at_the_last_layer():
    obj, params, state, batch = _objective()
    target = 2 * batch["image"] - 1
    stats = state["batch_stats"]["disc"]
    path = vqgan.decoder_output_kernel_path()

    def with_kernel(k, fn):
        p = jax.tree.map(lambda a: a, params["vqgan"])
        p["decoder"]["conv_out"]["kernel"] = k
        return fn(obj.model.apply({"params": p}, batch["image"], train=True)["dec"])

    kernel = params["vqgan"][path[0]][path[1]][path[2]]
    g_nll = jax.grad(with_kernel)(kernel, lambda d: obj.reconstruction_loss(target, d))
    g_gen = jax.grad(with_kernel)(kernel, lambda d: -jnp.mean(obj._disc(params["disc"], stats, d)[0]))
    want = np.linalg.norm(g_nll) / (np.linalg.norm(g_gen) + 1e-4)
    _, (_, metrics) = obj.loss(params, state, batch, jax.random.key(3), 5)
    np.testing.assert_allclose(float(metrics["d_weight"]), 0.5 * min(want, 1e4), rtol=1e-4)
    _, (_, before) = obj.loss(params, state, batch, jax.random.key(3), 5)
    obj_late, *_ = _objective(disc_start=100)
    _, (_, early) = obj_late.loss(params, state, batch, jax.random.key(3), 5)
    assert float(early["disc_factor"]) == 0.0 and float(early["d_loss"]) == 0.0 and float(before["disc_factor"]) == 1.0


def test_patch_discriminator_matches_taming():
    torch = pytest.importorskip("torch")
    tdisc = pytest.importorskip("taming.modules.discriminator.model")
    t = tdisc.NLayerDiscriminator(input_nc=3, ndf=8, n_layers=3).apply(tdisc.weights_init).train()
    d = PatchDiscriminator(8, 3)
    v = d.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3)), train=False)
    params = {}
    for name, module in t.main.named_children():
        if isinstance(module, torch.nn.Conv2d):
            params[f"main_{name}"] = {"kernel": module.weight.detach().numpy().transpose(2, 3, 1, 0)}
            if module.bias is not None:
                params[f"main_{name}"]["bias"] = module.bias.detach().numpy()
        elif isinstance(module, torch.nn.BatchNorm2d):
            params[f"main_{name}"] = {"scale": module.weight.detach().numpy(), "bias": module.bias.detach().numpy()}
    assert jax.tree.structure(params) == jax.tree.structure(v["params"])
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        ours, _ = d.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"])
    theirs = t(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy().transpose(0, 2, 3, 1)
    assert ours.shape == theirs.shape == (4, 2, 2, 1)
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4)
    with pytest.raises(ValueError, match="disc_layers"):
        d.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), train=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """configs/vqgan_digits.py's smoke run, with its PatchGAN term, for 30 steps logged every 10:
    (config, workdir, report)."""
    config = vqgan_digits.get_config("smoke")
    with config.unlocked():
        config.train.update(num_steps=30, log_every=10)
    workdir = str(tmp_path_factory.mktemp("vq"))
    return config, workdir, trainers.train_and_evaluate(config, workdir)


def test_training_lowers_the_reconstruction_loss_and_leaves_a_loadable_vqgan(trained):
    _, workdir, report = trained
    rec = [m["rec_loss"] for m in logged_metrics(workdir) if "rec_loss" in m]
    assert rec[-1] < 0.7 * rec[0]
    for name in ("vqgan.msgpack", "vqgan_model.json", "reconstructions.png", "report.md", "report.json"):
        assert os.path.isfile(os.path.join(workdir, name)), name
    model, variables = load_trained(workdir)
    assert model.n_embed == 16 and model.in_channels == 1
    x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1))
    assert model.apply(variables, x, method=model.reconstruct).shape == x.shape
    assert 0 < report["metrics"]["code_usage"] <= 1 and report["metrics"]["psnr"] > 0


def test_a_finished_run_resumes_for_more_steps_and_missing_files_are_explained(trained, tmp_path):
    config, finished, _ = trained
    workdir = str(tmp_path / "vq")
    shutil.copytree(finished, workdir)
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.train.num_steps = 32
    trainers.train_and_evaluate(config, workdir)
    steps = [m["step"] for m in logged_metrics(workdir) if "rec_loss" in m]
    assert steps == [10, 20, 30, 32]  # 10-30 from the first run, only the last step from the resumed one
    with pytest.raises(FileNotFoundError, match="configs/vqgan_digits.py"):
        load_trained(str(tmp_path / "nothing"))


def test_bad_loss_names_fail():
    with pytest.raises(ValueError, match="rec_loss"):
        VQGANObjective(vqgan.get("openimages_f8_16384", **ARCH), common.vqgan_training(rec_loss="l3"))
    with pytest.raises(ValueError, match="disc_loss"):
        VQGANObjective(vqgan.get("openimages_f8_16384", **ARCH), common.vqgan_training(disc_loss="wgan"))


@pytest.fixture(scope="module")
def lpips_reference_and_file(tmp_path_factory):
    """lpips 0.1.4's LPIPS-VGG with a random VGG-16 (no download) and its shipped lin weights, saved as torch
    files the way a user would have them (torchvision-style features.* + the package's lin weights)."""
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("lpips")
    torch.manual_seed(0)
    ref = lp.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    d = tmp_path_factory.mktemp("lpips")
    features = {re.sub(r"^net\.slice\d\.", "features.", k): v for k, v in ref.state_dict().items()
                if k.startswith("net.")}
    lins = {k: v for k, v in ref.state_dict().items() if k.startswith("lin")}
    torch.save(features, d / "vgg16.pth")
    torch.save(lins, d / "lin.pth")
    from robust_jax.vqgan_training import lpips

    out = str(d / "lpips.msgpack")
    lpips.convert_files([str(d / "vgg16.pth"), str(d / "lin.pth")], out)
    return ref, out


def test_lpips_matches_the_lpips_package(lpips_reference_and_file):
    import torch

    from robust_jax.vqgan_training import lpips

    ref, path = lpips_reference_and_file
    variables = lpips.load(path)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    x1 = np.clip(x0 + rng.normal(0, 0.3, x0.shape), -1, 1).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(lpips.LPIPS().apply(variables, x0, x1))
    with torch.no_grad():
        theirs = ref(*(torch.from_numpy(a.transpose(0, 3, 1, 2).copy()) for a in (x0, x1))).numpy().ravel()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)
    assert float(ours.min()) > 0
    direct = lpips.convert_state_dict(ref.state_dict())  # an lpips.LPIPS state_dict as is
    np.testing.assert_allclose(np.asarray(lpips.LPIPS().apply(direct, x0, x1)), ours, rtol=1e-5)


def test_perceptual_term_enters_the_loss_through_frozen_variables(lpips_reference_and_file):
    from robust_jax.vqgan_training import lpips

    _, path = lpips_reference_and_file
    arch = {**ARCH, "in_channels": 3, "out_ch": 3}
    cfg = common.vqgan_training(perceptual_weight=1.0, lpips_weights=path)
    obj = VQGANObjective(vqgan.get("openimages_f8_16384", **arch), cfg)
    variables = obj.init(jax.random.key(0), (16, 16, 3))
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
    loss, (_, m) = obj.loss(variables["params"], {}, {"image": x}, jax.random.key(2), 0, obj.frozen)
    dec = obj.model.apply({"params": variables["params"]["vqgan"]}, x)["dec"]
    p = float(jnp.mean(lpips.LPIPS().apply(obj.frozen["lpips"], 2 * x - 1, dec)))
    pixel = float(jnp.mean(jnp.abs(2 * x - 1 - dec)))
    np.testing.assert_allclose(float(m["rec_loss"]), pixel + p, rtol=1e-4)
    with pytest.raises(ValueError, match="lpips_weights"):
        VQGANObjective(obj.model, common.vqgan_training(perceptual_weight=1.0))
