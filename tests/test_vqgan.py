"""The Flax VQGAN against its PyTorch originals on random weights (easyrobust's VQModel copy, and taming's
Encoder / Decoder / VectorQuantizer2 modules assembled into a VQModel), the converter end to end on a
Lightning-style checkpoint file, and the quantiser's loss and gradient semantics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.init_compile import jit_init
from robust_jax.models import vqgan
from robust_jax.models.convert import taming as convert_taming

# Reduced widths (ch 32 keeps GroupNorm(32) valid) with each named config's structure: levels, attention
# placement (attn_resolutions scaled with resolution), z/embed dims.
SMALL = {
    "openimages_f8_16384": dict(ch=32, resolution=64, attn_resolutions=(8,), n_embed=64),
    "imagenet_f16_1024": dict(ch=32, resolution=64, attn_resolutions=(4,), z_channels=8, embed_dim=8, n_embed=32),
    "imagenet_f16_16384": dict(ch=32, resolution=64, attn_resolutions=(4,), z_channels=8, embed_dim=8, n_embed=128),
}
FULL_PARAMS = {"openimages_f8_16384": 67_717_295, "imagenet_f16_1024": 72_141_699, "imagenet_f16_16384": 76_073_859}


def _ddconfig(fields):
    return dict(double_z=False, z_channels=fields["z_channels"], resolution=fields["resolution"], in_channels=3,
                out_ch=3, ch=fields["ch"], ch_mult=list(fields["ch_mult"]), num_res_blocks=fields["num_res_blocks"],
                attn_resolutions=list(fields["attn_resolutions"]), dropout=0.0)


def _perturb(module, seed):
    """Random weights away from the defaults (GroupNorm affine, biases), so a mis-mapped leaf shows."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return module.eval()


def _torch_indices(tmodel, xt, embed_dim):
    """Codes by taming's distance |z|^2 + |e|^2 - 2 z.e, first minimum."""
    h = tmodel.quant_conv(tmodel.encoder(2 * xt - 1)).permute(0, 2, 3, 1).reshape(-1, embed_dim)
    e = tmodel.quantize.embedding.weight
    return ((h ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * h @ e.t()).argmin(1).numpy()


def _images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def _nchw(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _assert_matches_easyrobust(model, variables, tmodel, x, *, atol):
    """Our codes equal easyrobust's (taming's distance, first minimum) and our Q(x) is within `atol` of its
    reconstruct_with_vqgan; returns our reconstructions."""
    import torch
    from easyrobust.third_party.vqgan import reconstruct_with_vqgan

    with jax.default_matmul_precision("highest"):
        rec = np.asarray(model.apply(variables, jnp.asarray(x), method=model.reconstruct))
        codes = np.asarray(model.apply(variables, jnp.asarray(x), method=model.encode))
    with torch.no_grad():
        t_rec = reconstruct_with_vqgan(_nchw(x), tmodel).numpy().transpose(0, 2, 3, 1)
        t_codes = _torch_indices(tmodel, _nchw(x), model.embed_dim)
    np.testing.assert_array_equal(codes.ravel(), t_codes)
    np.testing.assert_allclose(rec, t_rec, atol=atol)
    return rec


@pytest.mark.parametrize("name", sorted(SMALL))
def test_matches_easyrobust_vqmodel(name):
    pytest.importorskip("torch")
    er = pytest.importorskip("easyrobust.third_party.vqgan")
    fields = {**vqgan.CONFIGS[name], **SMALL[name]}
    tmodel = _perturb(er.VQModel(_ddconfig(fields), n_embed=fields["n_embed"], embed_dim=fields["embed_dim"]), 0)
    variables = convert_taming.convert_taming_state_dict(tmodel.state_dict(), name, **SMALL[name])
    model = vqgan.get(name, **SMALL[name])
    rec = _assert_matches_easyrobust(model, variables, tmodel, _images(3, 32), atol=2e-5)
    assert 0.05 < rec.std(), "the reconstructions must not be trivially constant"


def test_matches_taming_modules_including_the_loss():
    """Encoder/Decoder/VectorQuantizer2 of taming-transformers, legacy and fixed beta placement."""
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("taming.modules.diffusionmodules.model")
    tq = pytest.importorskip("taming.modules.vqvae.quantize")
    name = "imagenet_f16_1024"
    fields = {**vqgan.CONFIGS[name], **SMALL[name]}
    for legacy in (True, False):
        t = torch.nn.Module()
        t.encoder, t.decoder = tm.Encoder(**_ddconfig(fields)), tm.Decoder(**_ddconfig(fields))
        t.quantize = tq.VectorQuantizer2(fields["n_embed"], fields["embed_dim"], beta=0.25, legacy=legacy)
        t.quant_conv = torch.nn.Conv2d(fields["z_channels"], fields["embed_dim"], 1)
        t.post_quant_conv = torch.nn.Conv2d(fields["embed_dim"], fields["z_channels"], 1)
        _perturb(t, 1)
        x = _images(2, 32, seed=1)
        with torch.no_grad():
            z = t.quant_conv(t.encoder(2 * _nchw(x) - 1))
            z_q, t_loss, (_, _, t_idx) = t.quantize(z)
            t_dec = t.decoder(t.post_quant_conv(z_q)).numpy().transpose(0, 2, 3, 1)
        model = vqgan.get(name, legacy=legacy, **SMALL[name])
        variables = convert_taming.convert_taming_state_dict(t.state_dict(), model)
        with jax.default_matmul_precision("highest"):
            out = model.apply(variables, jnp.asarray(x))
        np.testing.assert_array_equal(np.asarray(out["indices"]).ravel(), t_idx.numpy().ravel())
        np.testing.assert_allclose(np.asarray(out["dec"]), t_dec, atol=5e-5)
        np.testing.assert_allclose(float(out["qloss"]), float(t_loss), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(FULL_PARAMS))
def test_full_size_configs_have_the_published_parameter_counts(name):
    template = vqgan.init_template(vqgan.get(name))
    assert set(template) == {"params"}
    assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(template)) == FULL_PARAMS[name]


def _quantizer_and_latents(legacy):
    q = vqgan.VectorQuantizer(n_embed=8, embed_dim=3, beta=0.25, legacy=legacy)
    z = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    return q, q.init(jax.random.key(1), z), z


def test_straight_through_gradient_is_the_identity():
    q, v, z = _quantizer_and_latents(True)
    w = jax.random.normal(jax.random.key(2), z.shape)
    g = jax.grad(lambda zz: jnp.sum(q.apply(v, zz)[0] * w))(z)
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6)


@pytest.mark.parametrize("legacy", [True, False])
def test_beta_weighs_the_codebook_term_in_legacy_mode_and_the_commitment_term_otherwise(legacy):
    q, v, z = _quantizer_and_latents(legacy)
    loss_fn = lambda params, zz: q.apply({"params": params}, zz)[1]
    g_codebook, g_z = jax.grad(loss_fn, argnums=(0, 1))(v["params"], z)
    z_q = q.apply(v, z)[0]
    n = z.size
    commit_grad = 2 * (z - z_q) / n  # d/dz mean((sg[z_q] - z)^2)
    beta_on_z = 1.0 if legacy else 0.25
    np.testing.assert_allclose(np.asarray(g_z), beta_on_z * np.asarray(commit_grad), rtol=1e-5, atol=1e-7)
    # The codebook gradient: d/de mean((e[idx] - sg[z])^2), scaled by beta in legacy mode only.
    idx = np.asarray(q.apply(v, z)[2]).ravel()
    e = np.asarray(v["params"]["embedding"])
    manual = np.zeros_like(e)
    np.add.at(manual, idx, 2 * (e[idx] - np.asarray(z).reshape(-1, 3)) / n)
    np.testing.assert_allclose(np.asarray(g_codebook["embedding"]), (0.25 if legacy else 1.0) * manual,
                               rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def small_model():
    model = vqgan.get("openimages_f8_16384", **SMALL["openimages_f8_16384"])
    return model, jit_init(lambda k: model.init(k, jnp.zeros((1, 16, 16, 3))))(jax.random.key(0))


def test_decode_indices_of_encode_is_reconstruct_and_q_has_no_gradient(small_model):
    model, v = small_model
    x = jnp.asarray(_images(2, 16))
    # jitted: op by op, the VQGAN's passes compile hundreds of small programs (a minute on 2 cores)
    apply = jax.jit(model.apply, static_argnames="method")
    codes = apply(v, x, method=model.encode)
    assert codes.shape == (2, 2, 2) and codes.dtype == jnp.int32
    np.testing.assert_allclose(np.asarray(apply(v, codes, method=model.decode_indices)),
                               np.asarray(apply(v, x, method=model.reconstruct)), atol=1e-5)
    g = jax.jit(jax.grad(lambda xx: jnp.sum(vqgan.quantize(model, v, xx))))(x)
    assert float(jnp.abs(g).max()) == 0.0


def test_bad_inputs_fail_loudly(small_model):
    model, v = small_model
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        model.apply(v, jnp.full((1, 16, 16, 3), 2.0), method=model.encode)
    with pytest.raises(ValueError, match="multiples of 8"):
        model.apply(v, jnp.zeros((1, 12, 12, 3)), method=model.encode)
    with pytest.raises(ValueError, match="unknown VQGAN"):
        vqgan.get("imagenet_f8")


def test_converter_reads_a_lightning_checkpoint_file_end_to_end(tmp_path):
    torch = pytest.importorskip("torch")
    er = pytest.importorskip("easyrobust.third_party.vqgan")
    name, small = "openimages_f8_16384", SMALL["openimages_f8_16384"]
    fields = {**vqgan.CONFIGS[name], **small}
    tmodel = _perturb(er.VQModel(_ddconfig(fields), n_embed=fields["n_embed"], embed_dim=fields["embed_dim"]), 2)
    sd = dict(tmodel.state_dict())
    sd["loss.discriminator.main.0.weight"] = torch.zeros(64, 3, 4, 4)  # the training loss's weights
    sd["loss.perceptual_loss.lin0.model.1.weight"] = torch.zeros(1, 64, 1, 1)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 10}, ckpt)
    out = tmp_path / "vqgan.msgpack"
    from robust_jax.models.convert import cli

    args = [f"--model-arg={k}={v!r}" for k, v in small.items()]
    assert cli.main(["--model", f"vqgan:{name}", "--input", str(ckpt), "--output", str(out)] + args) == 0
    model = vqgan.get(name, **small)
    variables = vqgan.load(str(out), model)
    _assert_matches_easyrobust(model, variables, tmodel, _images(2, 16, seed=3), atol=2e-5)

    extra = {**sd, "encoder.extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="unexpected torch key 'encoder.extra.weight'"):
        convert_taming.convert_taming_state_dict({"state_dict": extra}, name, **small)
    missing = {k: v for k, v in sd.items() if k != "decoder.conv_out.bias"}
    with pytest.raises(ValueError, match="missing torch key 'decoder.conv_out.bias'"):
        convert_taming.convert_taming_state_dict(missing, name, **small)
    with pytest.raises(ValueError, match="shape mismatch"):
        convert_taming.convert_taming_state_dict(sd, name, **{**small, "n_embed": 32})
    with pytest.raises(ValueError, match="does not match"):  # a msgpack of another architecture
        vqgan.load(str(out), vqgan.get(name, **{**small, "n_embed": 32}))
    assert cli.main(["--model", f"vqgan:{name}", "--input", str(tmp_path / "none.ckpt"), "--output",
                     str(out)] + args) == 1


@pytest.mark.slow
@pytest.mark.heavy  # the same converter on a small model: test_converter_reads_a_lightning_checkpoint_file_end_to_end;
# the full-size parameter counts: the FULL_PARAMS templates above (24 CPU-s of the default run on 2 cores)
def test_full_size_f8_lightning_checkpoint_converts_end_to_end(tmp_path):
    """DAT's VQGAN at full size (67.7M parameters): a random-weights Lightning-style file with `loss.*` keys
    through robust-jax-convert, loaded strictly, same codes and reconstructions as easyrobust's model."""
    torch = pytest.importorskip("torch")
    er = pytest.importorskip("easyrobust.third_party.vqgan")
    from robust_jax.models.convert import cli

    name = "openimages_f8_16384"
    fields = vqgan.CONFIGS[name]
    torch.manual_seed(0)
    tmodel = er.VQModel(_ddconfig(fields), n_embed=fields["n_embed"], embed_dim=fields["embed_dim"]).eval()
    sd = dict(tmodel.state_dict())
    sd["loss.discriminator.main.0.weight"] = torch.zeros(64, 3, 4, 4)
    sd["loss.perceptual_loss.net.slice1.0.weight"] = torch.zeros(64, 3, 3, 3)
    ckpt, out = tmp_path / "vqgan_openimages_f8_16384.ckpt", tmp_path / "vqgan_f8.msgpack"
    torch.save({"state_dict": sd, "epoch": 9, "global_step": 1000}, ckpt)
    assert cli.main(["--model", f"vqgan:{name}", "--input", str(ckpt), "--output", str(out)]) == 0
    model = vqgan.get(name)
    variables = vqgan.load(str(out), model)
    assert sum(int(np.size(a)) for a in jax.tree.leaves(variables)) == FULL_PARAMS[name]
    _assert_matches_easyrobust(model, variables, tmodel, _images(2, 32, seed=4), atol=1e-4)
