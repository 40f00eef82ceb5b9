"""VisionTransformer (models/vit.py) and its timm converter (models/convert/vit.py).

Parity against timm 0.5.4's VisionTransformer on random weights (LayerNorm affine and biases randomised
too, so a wrong map or a wrong epsilon shows): logits and input gradients of a reduced ViT, and one
224x224 image through the full ViT-B/16. Train-mode randomness (dropout, drop path), the stochastic
depth schedule, input checks and the converter's strictness.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax import models
from robust_jax.init_compile import jit_init
from robust_jax.models import vit as vit_lib
from robust_jax.models.convert.vit import convert_timm_vit

SMALL = dict(num_classes=10, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), image_size=32, patch_size=4,
             hidden_dim=64, depth=2, num_heads=4)


def _count(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _timm_small(seed=0, **kwargs):
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer as TimmViT
    torch.manual_seed(seed)
    tm = TimmViT(img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=64, depth=2, num_heads=4,
                 **kwargs).eval()
    with torch.no_grad():  # every parameter moved off its init (LayerNorm ones/zeros, zero biases, ...)
        for p in tm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return tm


def _torch_logits(tm, x01, mean, std):
    """timm on [0,1] NHWC numpy images, normalised the way our model does inside."""
    import torch
    x = torch.tensor(x01).permute(0, 3, 1, 2)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return tm((x - m) / s)


@pytest.fixture(scope="module")
def small():
    tm = _timm_small()
    variables = convert_timm_vit(tm.state_dict(), "vit", **SMALL)
    return tm, models.get("vit", **SMALL), variables


def test_small_vit_logits_and_input_gradients_match_timm(small):
    import torch
    tm, model, variables = small
    x = np.random.RandomState(0).rand(4, 32, 32, 3).astype(np.float32)
    w = np.random.RandomState(1).randn(4, 10).astype(np.float32)

    def objective(x):
        return jnp.sum(model.apply(variables, x, train=False) * w)

    with jax.default_matmul_precision("highest"):
        logits = np.asarray(model.apply(variables, x, train=False))
        grad = np.asarray(jax.grad(objective)(x))
    xt = torch.tensor(x, requires_grad=True)
    m = torch.tensor(SMALL["mean"]).view(1, 3, 1, 1)
    s = torch.tensor(SMALL["std"]).view(1, 3, 1, 1)
    ref = tm((xt.permute(0, 3, 1, 2) - m) / s)
    (ref * torch.tensor(w)).sum().backward()
    ref, ref_grad = ref.detach().numpy(), xt.grad.numpy()
    assert np.abs(ref).max() > 0.5  # a non-trivial function
    np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(grad, ref_grad, atol=1e-4 * np.abs(ref_grad).max(), rtol=0)


def test_gap_pool_averages_patch_tokens(small):
    _, _, variables = small
    gap = models.get("vit", pool="gap", **SMALL)
    x = np.random.RandomState(2).rand(2, 32, 32, 3).astype(np.float32)
    out = gap.apply(variables, x, train=False)
    assert out.shape == (2, 10) and np.all(np.isfinite(out))
    assert not np.allclose(out, models.get("vit", **SMALL).apply(variables, x, train=False))


def test_full_vit_b16_converts_strictly_and_matches_timm():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    tm = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    with torch.no_grad():  # head and LayerNorms start at zero / ones: move them so the check means something
        for name, p in tm.named_parameters():
            if name.startswith(("head", "norm")) or ".norm" in name or name.endswith("bias"):
                p.add_(0.05 * torch.randn_like(p))
    kw = dict(num_classes=1000, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    variables = convert_timm_vit({"model": tm.state_dict()}, "vit_b16", **kw)  # DeiT-style wrapper
    n_timm = sum(p.numel() for p in tm.parameters())
    assert n_timm == 86_567_656 and _count(variables) == n_timm
    x = np.random.RandomState(0).rand(1, 224, 224, 3).astype(np.float32)
    model = models.get("vit_b16", **kw)
    with jax.default_matmul_precision("highest"):
        logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    with torch.no_grad():
        ref = _torch_logits(tm, x, kw["mean"], kw["std"]).numpy()
    np.testing.assert_allclose(logits, ref, atol=2e-4 * max(1.0, np.abs(ref).max()), rtol=0)


@pytest.mark.parametrize("name,count", [("vit_b16", 86_567_656), ("vit_s16", 22_050_664), ("vit_ti16", 5_717_416)])
def test_registry_parameter_counts(name, count):
    model = models.get(name, num_classes=1000)
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    shapes = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
    assert set(shapes) == {"params"} and _count(shapes) == count


def test_init_follows_timm():
    model = models.get("vit", **SMALL)
    v = jit_init(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), train=False))(jax.random.key(0))["params"]
    b = v["blocks_0"]
    assert np.all(b["norm1"]["scale"] == 1) and np.all(b["norm1"]["bias"] == 0)
    assert np.all(b["attn"]["qkv"]["bias"] == 0) and np.all(v["head"]["bias"] == 0)
    for a in (b["mlp"]["fc1"]["kernel"], v["head"]["kernel"], v["pos_embed"]):
        assert 0.015 < float(np.std(a)) < 0.025  # trunc normal std .02 (the head is not zero in timm 0.5.4)
    assert np.abs(v["patch_embed"]["proj"]["bias"]).max() <= 1 / np.sqrt(3 * 4 * 4)  # torch default


def test_drop_path_rates_follow_timm_linspace():
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer as TimmViT
    model = models.get("vit_b16", num_classes=1000, drop_path_rate=0.25)
    want = [x.item() for x in torch.linspace(0, 0.25, 12)]
    np.testing.assert_allclose(model.block_drop_path_rates, want, rtol=1e-6, atol=0)
    tm = TimmViT(img_size=32, patch_size=4, embed_dim=16, depth=5, num_heads=2, drop_path_rate=0.3)
    timm_rates = [getattr(blk.drop_path, "drop_prob", 0.0) for blk in tm.blocks]
    np.testing.assert_allclose(vit_lib.drop_path_rates(0.3, 5), timm_rates, rtol=1e-6, atol=0)


@pytest.mark.parametrize("rates", [dict(drop_path_rate=0.5), dict(drop_rate=0.2), dict(attn_drop_rate=0.2)])
def test_train_mode_randomness(rates):
    model = models.get("vit", **{**SMALL, **rates})
    x = np.random.RandomState(0).rand(8, 32, 32, 3).astype(np.float32)
    v = jit_init(lambda k: model.init(k, x, train=False))(jax.random.key(0))
    k1, k2 = jax.random.key(1), jax.random.key(2)
    train = jax.jit(lambda v, x, k: model.apply(v, x, train=True, rngs={"dropout": k}))
    a, a2, b = train(v, x, k1), train(v, x, k1), train(v, x, k2)
    np.testing.assert_array_equal(a, a2)
    assert not np.allclose(a, b)
    e1, e2 = model.apply(v, x, train=False), model.apply(v, x, train=False)  # no rng needed
    np.testing.assert_array_equal(e1, e2)
    assert not np.allclose(a, e1)


def test_zero_rates_train_mode_needs_no_rng_and_equals_eval():
    model = models.get("vit", **SMALL)
    x = np.random.RandomState(0).rand(2, 32, 32, 3).astype(np.float32)
    v = jit_init(lambda k: model.init(k, x, train=False))(jax.random.key(0))
    np.testing.assert_array_equal(model.apply(v, x, train=True), model.apply(v, x, train=False))


def test_drop_path_is_per_sample_and_scaled():
    y = jnp.ones((4000, 3, 5))
    out = np.asarray(vit_lib.drop_path(y, 0.25, jax.random.key(0)))
    per_sample = out.reshape(4000, -1)
    assert np.all((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1))  # whole examples
    assert abs((per_sample[:, 0] == 0).mean() - 0.25) < 0.03


def test_wrong_input_size_and_bn_raise():
    model = models.get("vit", **SMALL)
    x = jnp.zeros((1, 32, 32, 3))
    v = jit_init(lambda k: model.init(k, x, train=False))(jax.random.key(0))
    with pytest.raises(ValueError, match="image_size=32"):
        model.apply(v, jnp.zeros((1, 64, 64, 3)), train=False)
    with pytest.raises(ValueError, match="bn must be 'clean'"):
        model.apply(v, x, train=False, bn="adv")


def test_converter_is_strict(small):
    tm, _, _ = small
    sd = dict(tm.state_dict())
    extra = {**sd, "dist_token": sd["cls_token"]}
    with pytest.raises(ValueError, match="unexpected torch key 'dist_token'"):
        convert_timm_vit(extra, "vit", **SMALL)
    missing = {k: t for k, t in sd.items() if k != "blocks.1.mlp.fc2.bias"}
    with pytest.raises(ValueError, match="missing torch key 'blocks.1.mlp.fc2.bias'"):
        convert_timm_vit(missing, "vit", **SMALL)
    with pytest.raises(ValueError, match="shape mismatch for torch key 'head.weight'"):
        convert_timm_vit(sd, "vit", **{**SMALL, "num_classes": 7})
    with pytest.raises(ValueError, match="not a VisionTransformer"):
        convert_timm_vit(sd, "resnet18")


def test_converter_names_the_checkpoint_image_size(small):
    tm, _, _ = small
    with pytest.raises(ValueError, match=r"image_size=32.*model has image_size=64"):
        convert_timm_vit(tm.state_dict(), "vit", **{**SMALL, "image_size": 64})


def test_cli_converts_a_timm_checkpoint_file(tmp_path):
    """robust-jax-convert --model vit with a saved DeiT-style {'model': state_dict} file."""
    torch = pytest.importorskip("torch")
    vt = pytest.importorskip("timm.models.vision_transformer")
    from robust_jax.models import variables_io
    from robust_jax.models.convert import cli

    t = vt.VisionTransformer(img_size=32, patch_size=8, num_classes=10, embed_dim=32, depth=1, num_heads=2).eval()
    path = tmp_path / "deit.pth"
    torch.save({"model": t.state_dict(), "epoch": 1}, path)
    out = tmp_path / "vit.msgpack"
    args = ["--model", "vit", "--num-classes", "10", "--input", str(path), "--output", str(out)]
    fields = dict(image_size=32, patch_size=8, hidden_dim=32, depth=1, num_heads=2)
    assert cli.main(args + [f"--model-arg={k}={v}" for k, v in fields.items()]) == 0
    model = models.get("vit", num_classes=10, mean=(0, 0, 0), std=(1, 1, 1), **fields)
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
    variables = variables_io.load_variables(str(out), template)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = t(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(np.asarray(model.apply(variables, x, train=False)), want, atol=1e-4)
    assert cli.main(args + ["--dual-bn"]) == 1
