"""Swin Transformer (models/swin.py), its timm converter (convert/swin.py), the ARD hook, and the ViT
224/16 -> 32/4 re-targeting (convert/vit_adapt.py) with its `robust-jax-convert` flags.

Parity is against timm 0.5.4's SwinTransformer on random weights with every parameter moved off its init:
a reduced Swin whose two stages cover a shifted multi-window grid (8x8 tokens, 2x2 windows of 4x4 with the
shift mask) and timm's "grid no larger than the window" rule (4x4 tokens, one unshifted window).
Full-size Swin-T is the `heavy` check. Each jitted program is compiled once and shared (module fixtures):
XLA:CPU compile time, not compute, is what this file spends.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import models
from robust_jax.models import swin as swin_lib
from robust_jax.models import vit as vit_lib
from robust_jax.models.convert import vit_adapt
from robust_jax.models.convert.fill import from_torch
from robust_jax.models.convert.swin import convert_timm_swin

pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")  # inside timm's Swin

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
ARCH = dict(image_size=32, patch_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4)
NUM_BLOCKS = 4
SMALL = dict(num_classes=10, mean=MEAN, std=STD, **ARCH)


def _timm_swin(seed=0, **overrides):
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from timm.models.swin_transformer import SwinTransformer as TimmSwin
    a = {**ARCH, **overrides}
    torch.manual_seed(seed)
    tm = TimmSwin(img_size=a["image_size"], patch_size=a["patch_size"], embed_dim=a["embed_dim"], depths=a["depths"],
                  num_heads=a["num_heads"], window_size=a["window_size"], num_classes=10).eval()
    with torch.no_grad():  # LayerNorms, biases and bias tables moved off ones/zeros/small values
        for p in tm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return tm


def _torch_logits(tm, x01, mean=MEAN, std=STD, grad_weights=None):
    """timm on [0,1] NHWC numpy images, normalised as our model does inside; with `grad_weights`, also the
    input gradient of sum(logits * grad_weights)."""
    import torch
    xt = torch.tensor(x01, requires_grad=grad_weights is not None)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    out = tm((xt.permute(0, 3, 1, 2) - m) / s)
    if grad_weights is None:
        return out.detach().numpy()
    (out * torch.tensor(grad_weights)).sum().backward()
    return out.detach().numpy(), xt.grad.numpy()


@pytest.fixture(scope="module")
def small():
    """(timm model, our model, converted variables, f) with f(v, x, w, keep) -> (logits, d sum(logits * w) / dx)
    jitted: one compile for keep=None, one for any keep array."""
    tm = _timm_swin()
    model = models.get("swin", **SMALL)
    variables = convert_timm_swin(tm.state_dict(), "swin", **SMALL)

    def objective(x, v, w, keep):
        logits = model.apply(v, x, train=False, attn_grad_keep=keep)
        return jnp.sum(logits * w), logits

    value_grad = jax.value_and_grad(objective, has_aux=True)
    f = jax.jit(lambda v, x, w, keep: (lambda r: (r[0][1], r[1]))(value_grad(x, v, w, keep)))
    return tm, model, variables, f


@pytest.fixture(scope="module")
def data():
    rs = np.random.RandomState(0)
    return rs.rand(3, 32, 32, 3).astype(np.float32), rs.randn(3, 10).astype(np.float32)


def test_small_swin_logits_and_input_gradients_match_timm(small, data):
    """On the CPU float32 matmuls are full precision (no `default_matmul_precision` needed)."""
    tm, model, variables, f = small
    x, w = data
    assert model.stage_geometry == ((8, 4, 2), (4, 4, 0))  # 2x2 shifted windows, then one unshifted window
    out, g = map(np.asarray, f(variables, x, w, None))
    ref, ref_grad = _torch_logits(tm, x, grad_weights=w)
    assert np.abs(ref).max() > 0.5  # a non-trivial function
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(g, ref_grad, atol=1e-4 * np.abs(ref_grad).max(), rtol=0)


def test_geometry_helpers_match_timm_buffers(small):
    tm = small[0]
    sd = tm.state_dict()
    np.testing.assert_array_equal(swin_lib.relative_position_index(4),
                                  sd["layers.0.blocks.0.attn.relative_position_index"])
    np.testing.assert_array_equal(swin_lib.shifted_window_mask(8, 4, 2), sd["layers.0.blocks.1.attn_mask"])
    np.testing.assert_array_equal(swin_lib.shifted_window_mask(16, 4, 2),
                                  _timm_swin(image_size=64).state_dict()["layers.0.blocks.1.attn_mask"])
    assert "layers.1.blocks.1.attn_mask" not in sd  # the 4x4 grid is one unshifted window, as ours
    idx = swin_lib.relative_position_index(2)  # by hand: tokens (0,0),(0,1),(1,0),(1,1), offsets on a 3x3 grid
    np.testing.assert_array_equal(idx[0], [4, 3, 1, 0])
    np.testing.assert_array_equal(idx[3], [8, 7, 5, 4])


def test_window_partition_round_trip():
    x = jnp.arange(2 * 8 * 8 * 3.0).reshape(2, 8, 8, 3)
    w = swin_lib.window_partition(x, 4)
    assert w.shape == (2, 4, 16, 3)
    np.testing.assert_array_equal(w[0, 1, 0], x[0, 0, 4])  # window 1 = top right, its first token
    np.testing.assert_array_equal(swin_lib.window_merge(w, 4, 8, 8), x)


@pytest.mark.heavy
def test_full_swin_tiny_converts_strictly_and_matches_timm():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    tm = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    with torch.no_grad():
        for name, p in tm.named_parameters():
            if name.startswith(("head", "norm")) or "norm" in name or name.endswith("bias"):
                p.add_(0.05 * torch.randn_like(p))
    kw = dict(num_classes=1000, mean=MEAN, std=STD)
    variables = convert_timm_swin({"model": tm.state_dict()}, "swin_tiny_patch4_window7_224", **kw)
    x = np.random.RandomState(0).rand(1, 224, 224, 3).astype(np.float32)
    model = models.get("swin_tiny_patch4_window7_224", **kw)
    with jax.default_matmul_precision("highest"):
        out = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    with torch.no_grad():
        ref = _torch_logits(tm, x)
    np.testing.assert_allclose(out, ref, atol=1e-4 * max(1.0, np.abs(ref).max()), rtol=0)


@pytest.mark.parametrize("name,count", [("swin_tiny_patch4_window7_224", 28_288_354),
                                        ("swin_small_patch4_window7_224", 49_606_258),
                                        ("swin_base_patch4_window7_224", 87_768_224)])
def test_registry_parameter_counts_equal_timm(name, count):
    model = models.get(name, num_classes=1000)
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 224, 224, 3)), train=False), jax.random.key(0))
    assert set(shapes) == {"params"}
    assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes)) == count
    assert model.patch_size == 4 and model.num_attention_blocks == sum(model.depths)


# ---- ARD hook ---------------------------------------------------------------------------------------------

def test_ard_never_changes_values_and_switches_gradients(small, data):
    _, _, variables, f = small
    x, w = data
    ref, g_none = map(np.asarray, f(variables, x, w, None))
    scale = np.abs(g_none).max()
    grads = {}
    for name, keep in [("all", [True] * 4), ("none", [False] * 4), ("some", [True, False, True, True])]:
        out, grads[name] = map(np.asarray, f(variables, x, w, jnp.asarray(keep)))  # one compile for all
        np.testing.assert_array_equal(out, ref)  # forward values never change
    np.testing.assert_allclose(grads["all"], g_none, atol=1e-6 * scale, rtol=0)
    assert np.abs(grads["some"] - g_none).max() > 1e-3 * scale
    assert np.abs(grads["none"] - grads["some"]).max() > 1e-3 * scale


def test_ard_switch_takes_bools_and_zero_one_floats():
    p = jnp.asarray([0.2, 0.8])

    def grad(keep):
        return np.asarray(jax.grad(lambda p: jnp.sum(vit_lib.ard_switch(p, keep) ** 2))(p))

    np.testing.assert_array_equal(vit_lib.ard_switch(p, jnp.float32(0.0)), p)
    np.testing.assert_array_equal(grad(jnp.float32(0.0)), [0, 0])
    np.testing.assert_array_equal(grad(jnp.asarray(False)), [0, 0])
    np.testing.assert_allclose(grad(jnp.float32(1.0)), [0.4, 1.6])
    np.testing.assert_allclose(grad(jnp.asarray(True)), [0.4, 1.6])


def test_all_blocks_dropped_equals_constant_softmax_gradient(small, data, monkeypatch):
    """With every block's probabilities stopped, the input gradient is NOT zero: it equals the gradient of
    the same network whose softmax outputs are replaced by constants (recorded from a forward pass)."""
    _, model, variables, f = small
    x, w = data
    softmax, recorded = swin_lib.attention_softmax, []

    def record(logits):
        recorded.append(softmax(logits))
        return recorded[-1]

    def forward_probs(x):  # every block's probabilities, in forward order
        recorded.clear()
        monkeypatch.setattr(swin_lib, "attention_softmax", record)
        model.apply(variables, x, train=False)
        return list(recorded)

    def objective_with_fixed_probs(x, probs):  # the network with its softmax outputs replaced by `probs`
        given = iter(probs)

        def fixed(logits):
            p = next(given)
            assert p.shape == logits.shape
            return p

        monkeypatch.setattr(swin_lib, "attention_softmax", fixed)
        return jnp.sum(model.apply(variables, x, train=False) * w)

    def reference(x):  # grad w.r.t. x only: the probabilities enter as a second argument, held fixed
        probs = forward_probs(x)
        assert len(probs) == model.num_attention_blocks
        return jax.grad(objective_with_fixed_probs)(x, probs)

    want = np.asarray(jax.jit(reference)(x))
    monkeypatch.setattr(swin_lib, "attention_softmax", softmax)

    got = np.asarray(f(variables, x, w, jnp.zeros(NUM_BLOCKS, bool))[1])
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)


def test_ard_rejects_a_wrong_keep_shape(small, data):
    _, model, variables, _ = small
    with pytest.raises(ValueError, match=r"attn_grad_keep must have shape \(4,\)"):
        jax.eval_shape(lambda: model.apply(variables, data[0], train=False, attn_grad_keep=jnp.ones(6, bool)))


# ---- model behaviour -----------------------------------------------------------------------------------------

def test_drop_path_rates_follow_timm_linspace_over_all_stages():
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    from timm.models.swin_transformer import SwinTransformer as TimmSwin
    tm = TimmSwin(img_size=32, patch_size=2, embed_dim=16, depths=(2, 3), num_heads=(2, 2), window_size=4,
                  drop_path_rate=0.3)
    want = [getattr(b.drop_path, "drop_prob", 0.0) for layer in tm.layers for b in layer.blocks]
    model = models.get("swin", embed_dim=16, depths=(2, 3), num_heads=(2, 2), drop_path_rate=0.3)
    np.testing.assert_allclose(model.block_drop_path_rates, want, rtol=1e-6, atol=0)


def test_train_mode_randomness():
    """Dropout and drop path draw from the 'dropout' stream in train mode (a 2-block Swin, random weights)."""
    model = models.get("swin", num_classes=10, image_size=16, patch_size=4, embed_dim=16, depths=(2,), num_heads=(2,),
                       window_size=2, drop_path_rate=0.5, attn_drop_rate=0.2)
    x = np.random.RandomState(0).rand(4, 16, 16, 3).astype(np.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    rs = np.random.RandomState(1)
    variables = jax.tree.map(lambda s: (0.3 * rs.randn(*s.shape)).astype(np.float32), shapes)
    train = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
    a, a2, b = (train(variables, x, jax.random.key(k, impl="rbg")) for k in (1, 1, 2))  # rbg: faster compile
    np.testing.assert_array_equal(a, a2)
    assert not np.allclose(a, b)
    with pytest.raises(Exception, match="dropout"):  # no rng in train mode with positive rates: an error
        jax.eval_shape(lambda: model.apply(variables, x, train=True))


def test_init_follows_timm():
    model = models.get("swin", num_classes=10, image_size=16, patch_size=4, embed_dim=32, depths=(1, 1),
                       num_heads=(8, 8), window_size=2)
    # the 'rbg' key: same distributions, half the XLA:CPU compile time of threefry's unrolled rounds
    key = jax.random.key(0, impl="rbg")
    v = jax.jit(lambda k: model.init(k, jnp.zeros((1, 16, 16, 3)), train=False))(key)["params"]
    b = v["layers_0"]["blocks_0"]
    assert np.all(b["norm1"]["scale"] == 1) and np.all(b["attn"]["qkv"]["bias"] == 0)
    assert np.all(v["patch_embed"]["norm"]["scale"] == 1) and np.all(v["head"]["bias"] == 0)
    for a in (b["mlp"]["fc1"]["kernel"], v["layers_0"]["downsample"]["reduction"]["kernel"], v["head"]["kernel"]):
        assert 0.015 < float(np.std(a)) < 0.025
    table = v["layers_1"]["blocks_0"]["attn"]["relative_position_bias_table"]
    assert table.shape == (9, 8) and 0.01 < float(np.std(table)) < 0.03


def test_input_and_geometry_errors(small):
    _, model, variables, _ = small
    with pytest.raises(ValueError, match="image_size=32"):
        model.apply(variables, jnp.zeros((1, 64, 64, 3)), train=False)
    with pytest.raises(ValueError, match="bn must be 'clean'"):
        model.apply(variables, jnp.zeros((1, 32, 32, 3)), train=False, bn="adv")
    bad = models.get("swin", **{**SMALL, "window_size": 3})
    with pytest.raises(ValueError, match=r"8x8 token grid does not split into 3x3 windows"):
        jax.eval_shape(lambda: bad.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))


# ---- converter -----------------------------------------------------------------------------------------------

def test_converter_is_strict(small):
    tm = small[0]
    sd = dict(tm.state_dict())
    with pytest.raises(ValueError, match="unexpected torch key 'layers.0.blocks.0.attn.extra'"):
        convert_timm_swin({**sd, "layers.0.blocks.0.attn.extra": sd["norm.bias"]}, "swin", **SMALL)
    missing = {k: t for k, t in sd.items() if k != "layers.0.downsample.reduction.weight"}
    with pytest.raises(ValueError, match="missing torch key 'layers.0.downsample.reduction.weight'"):
        convert_timm_swin(missing, "swin", **SMALL)
    with pytest.raises(ValueError, match="shape mismatch for torch key 'head.weight'"):
        convert_timm_swin(sd, "swin", **{**SMALL, "num_classes": 7})
    with pytest.raises(ValueError, match="not a SwinTransformer"):
        convert_timm_swin(sd, "vit")
    # another window size: the bias tables' shapes and the geometry buffers disagree, both named
    with pytest.raises(ValueError, match=r"(?s)relative_position_bias_table.*relative position index of a 2x2"):
        convert_timm_swin(sd, "swin", **{**SMALL, "window_size": 2})
    # the buffers are derived constants: a state_dict without them converts to the same variables
    params = {k: t for k, t in sd.items() if not k.endswith(("relative_position_index", "attn_mask"))}
    a, b = convert_timm_swin(params, "swin", **SMALL), convert_timm_swin(sd, "swin", **SMALL)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_cli_converts_a_swin_checkpoint_with_a_new_head(tmp_path, small, data):
    torch = pytest.importorskip("torch")
    from robust_jax.models import variables_io
    from robust_jax.models.convert import cli

    tm, _, variables, _ = small
    path, out = tmp_path / "swin.pth", tmp_path / "swin.msgpack"
    torch.save({"model": tm.state_dict(), "epoch": 3}, path)
    fields = [f"--model-arg={k}={v!r}".replace(" ", "") for k, v in ARCH.items()]
    args = ["--model", "swin", "--input", str(path), "--output", str(out), "--mean", "0.485,0.456,0.406",
            "--std", "0.229,0.224,0.225"] + fields
    assert cli.main(args + ["--num-classes", "10"]) == 0
    model = models.get("swin", **SMALL)
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    jax.tree.map(np.testing.assert_array_equal, variables_io.load_variables(str(out), template), variables)

    assert cli.main(args + ["--num-classes", "7", "--new-head", "--seed", "1"]) == 0
    model7 = models.get("swin", **{**SMALL, "num_classes": 7})
    template = jax.eval_shape(lambda: model7.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    loaded = variables_io.load_variables(str(out), template)["params"]
    assert np.all(loaded["head"]["bias"] == 0) and 0.01 < float(np.std(loaded["head"]["kernel"])) < 0.03
    np.testing.assert_array_equal(loaded["norm"]["scale"], variables["params"]["norm"]["scale"])
    assert cli.main(args + ["--adapt-patch", "1", "--image-size", "32"]) == 1  # ViT only


# ---- ViT 224/16 -> 32/4 re-targeting -------------------------------------------------------------------------

def test_folded_patch_conv_on_small_image_equals_original_on_upsampled_image():
    rs = np.random.RandomState(0)
    w16, bias = rs.randn(8, 3, 16, 16).astype(np.float32), rs.randn(8).astype(np.float32)
    w4 = vit_adapt.fold_patch_kernel(w16, 4)
    assert w4.shape == (8, 3, 4, 4)
    np.testing.assert_allclose(w4[2, 1, 3, 0], w16[2, 1, 12:16, 0:4].sum(), rtol=1e-5)
    x = rs.rand(2, 32, 32, 3).astype(np.float32)
    up = np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)  # each pixel a 4x4 block: 128 px

    def embed(weight, p, images):
        params = {"proj": {"kernel": from_torch(weight, "kernel"), "bias": bias}}
        return np.asarray(vit_lib.PatchEmbed(8, p).apply({"params": params}, images))

    with jax.default_matmul_precision("highest"):
        small, big = embed(w4, 4, x), embed(w16, 16, up)
    assert small.shape == big.shape == (2, 64, 8)
    np.testing.assert_allclose(small, big, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="must divide 16"):
        vit_adapt.fold_patch_kernel(w16, 5)


def test_resized_pos_embed_keeps_the_class_token_and_is_torch_bilinear():
    rs = np.random.RandomState(0)
    pe = rs.randn(1, 1 + 14 * 14, 6).astype(np.float32)
    out = vit_adapt.resize_pos_embed(pe, 8)
    assert out.shape == (1, 65, 6)
    np.testing.assert_array_equal(out[:, 0], pe[:, 0])
    grid = pe[0, 1:].reshape(14, 14, 6)
    want = jax.image.resize(grid, (8, 8, 6), "bilinear", antialias=False)  # half-pixel centres, no antialias
    np.testing.assert_allclose(out[0, 1:].reshape(8, 8, 6), want, atol=1e-5, rtol=0)
    # by hand, 4x4 -> 2x2: the sample points fall on the centres of the 2x2 blocks -> their means
    small = rs.randn(1, 17, 2).astype(np.float32)
    g = small[0, 1:].reshape(4, 4, 2)
    np.testing.assert_allclose(vit_adapt.resize_pos_embed(small, 2)[0, 1:].reshape(2, 2, 2),
                               g.reshape(2, 2, 2, 2, 2).mean(axis=(1, 3)), atol=1e-6, rtol=0)
    # by hand, 2 -> 3 (1-D): sources 1/6 - 1/2 < 0 (clamped to 0), 1/2, 7/6 (clamped neighbour)
    np.testing.assert_allclose(vit_adapt.bilinear_matrix(2, 3), [[1, 0], [0.5, 0.5], [0, 1]], atol=1e-12)
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    ref = F.interpolate(torch.tensor(grid).permute(2, 0, 1)[None], size=(8, 8), mode="bilinear")
    np.testing.assert_allclose(out[0, 1:].reshape(8, 8, 6), ref[0].permute(1, 2, 0).numpy(), atol=1e-5, rtol=0)


def test_adapted_vit_on_small_image_equals_timm_on_upsampled_image(tmp_path):
    """End to end through `robust-jax-convert --adapt-patch 4 --image-size 16`: a timm ViT at 64 px with
    16 px patches (4x4 grid) re-targeted to 16 px with 4 px patches keeps its 4x4 grid, so the adapted model
    on an image equals timm on the same image upsampled 4x by pixel repetition."""
    torch = pytest.importorskip("torch")
    vt = pytest.importorskip("timm.models.vision_transformer")
    from robust_jax.models import variables_io
    from robust_jax.models.convert import cli

    torch.manual_seed(0)
    t = vt.VisionTransformer(img_size=64, patch_size=16, num_classes=5, embed_dim=32, depth=1, num_heads=2).eval()
    path, out = tmp_path / "vit.pth", tmp_path / "vit.msgpack"
    torch.save(t.state_dict(), path)
    fields = dict(hidden_dim=32, depth=1, num_heads=2)
    args = ["--model", "vit", "--num-classes", "5", "--input", str(path), "--output", str(out)]
    args += [f"--model-arg={k}={v}" for k, v in fields.items()]
    assert cli.main(args + ["--adapt-patch", "4", "--image-size", "16"]) == 0
    model = models.get("vit", num_classes=5, image_size=16, patch_size=4, **fields)
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False))
    variables = variables_io.load_variables(str(out), template)
    x = np.random.RandomState(0).rand(2, 16, 16, 3).astype(np.float32)
    up = np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)
    got = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    with torch.no_grad():
        want = t(torch.from_numpy(up.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    # 224/16 -> 32/4 shapes (the reference's CIFAR setting): 14x14 -> 8x8 grid, class token kept, new head
    sd = {"patch_embed.proj.weight": np.zeros((32, 3, 16, 16)), "pos_embed": np.zeros((1, 197, 32)),
          "head.weight": np.zeros((1000, 32)), "head.bias": np.zeros(1000)}
    adapted = vit_adapt.adapt_timm_vit(sd, patch_size=4, image_size=32, num_classes=10)
    assert adapted["patch_embed.proj.weight"].shape == (32, 3, 4, 4) and adapted["pos_embed"].shape == (1, 65, 32)
    assert adapted["head.weight"].shape == (10, 32) and adapted["head.bias"].shape == (10,)
    assert cli.main(args + ["--adapt-patch", "4"]) == 1  # --image-size is required with it
