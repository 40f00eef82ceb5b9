"""AdvBN's step against a PyTorch computation of the reference's (azshue/AdvBN `train` + `perturb`): torchvision's
Bottleneck ResNet with random weights, a dual-BN head built as the reference does (convs and fc shared, each BN
twice), per-GPU attacks on groups of the batch, synchronised head BNs. Compared: the attacked factors, both
losses, the head's gradients and each BN set's running statistics."""
import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
F = torch.nn.functional

import torch_refs  # noqa: E402
from configs import common  # noqa: E402
from robust_jax import methods, models  # noqa: E402
from robust_jax.models import convert, dual_bn  # noqa: E402

STAGES = (1, 1, 1, 1)
CUT, GROUP, STEPS, STEP, EPS = 1, 4, 6, 0.2, 1.1


def _torch_models():
    """(clean, adv): two torchvision ResNets sharing every conv and the fc, with their own BatchNorms."""
    torch.manual_seed(0)
    clean = torch_refs.randomize(torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck,
                                                                  list(STAGES), num_classes=10), seed=1)
    adv = torch_refs.randomize(copy.deepcopy(clean), seed=2)  # new BN affine/statistics, same convs and fc
    for (_, mc), (_, ma) in zip(clean.named_modules(), adv.named_modules()):
        if isinstance(mc, (torch.nn.Conv2d, torch.nn.Linear)):
            ma.weight = mc.weight
            if mc.bias is not None:
                ma.bias = mc.bias
    return clean, adv


def _front(m, x):
    return m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x)))))


def _head(m, f):
    return m.fc(torch.flatten(m.avgpool(m.layer4(m.layer3(m.layer2(f)))), 1))


def _clamp_min0(v):
    """torch.clamp(v, min=0) with the gradient the reference's torch 1.7.1 gave: 1 at exactly 0 (PyTorch 0.4.1
    to recent releases; torch 2.14 here gives 0, the minimum-norm subgradient). At s = 1 the post-ReLU zeros
    are exactly 0 again, so this decides the first step."""
    return torch.where(v >= 0, v, torch.zeros_like(v))


def _torch_perturb(adv, f, y):
    """The reference's attack for one GPU's features f: factors [1, C, 1, 1] from 1, eval mode."""
    mu = f.mean(dim=(0, 2, 3), keepdim=True)
    s_mu = torch.ones_like(mu)
    s_sigma = torch.ones_like(mu)
    for _ in range(STEPS):
        s_mu.requires_grad_(True)
        s_sigma.requires_grad_(True)
        loss = F.cross_entropy(_head(adv, _clamp_min0((f - mu) * s_sigma + mu * s_mu)), y)
        g_mu, g_sigma = torch.autograd.grad(loss, [s_mu, s_sigma])
        s_mu = torch.clamp(s_mu.detach() + STEP * torch.sign(g_mu), 1 - EPS, 1 + EPS)
        s_sigma = torch.clamp(s_sigma.detach() + STEP * torch.sign(g_sigma), 1 - EPS, 1 + EPS)
    return _clamp_min0((f - mu) * s_sigma + mu * s_mu).detach(), s_mu.flatten(), s_sigma.flatten()


def _torch_step(clean, adv, x, y):
    clean.eval()
    adv.eval()
    with torch.no_grad():
        f = _front(clean, x)
    parts = [_torch_perturb(adv, f[i:i + GROUP], y[i:i + GROUP]) for i in range(0, len(x), GROUP)]
    f_adv = torch.cat([p[0] for p in parts])
    clean.train()
    adv.train()  # one head pass over the whole batch per BN set = the reference's SyncBatchNorm
    loss_adv = F.cross_entropy(_head(adv, f_adv), y)
    loss_clean = F.cross_entropy(_head(clean, f), y)
    (loss_adv + loss_clean).backward()
    s_mu = torch.stack([p[1] for p in parts])
    s_sigma = torch.stack([p[2] for p in parts])
    return dict(loss_adv=loss_adv.item(), loss_clean=loss_clean.item(), s_mu=s_mu.numpy(), s_sigma=s_sigma.numpy())


def _to_flax(clean, adv, model):
    """Our dual-BN variables: the clean set from `clean`'s BNs, the adv set from `adv`'s."""
    x = jnp.zeros((1, 32, 32, 3))
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    kw = dict(num_classes=10, stage_sizes=STAGES)
    from_clean = dual_bn.to_dual_bn(convert.convert_state_dict(clean.state_dict(), "resnet50", **kw), template)
    from_adv = dual_bn.to_dual_bn(convert.convert_state_dict(adv.state_dict(), "resnet50", **kw), template)

    def pick(path, c, a):
        return a if "adv" in [str(getattr(p, "key", p)) for p in path] else c
    return jax.tree_util.tree_map_with_path(pick, from_clean, from_adv)


def test_advbn_step_matches_the_pytorch_reference():
    clean, adv = _torch_models()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)

    model = models.get("resnet50", num_classes=10, stage_sizes=STAGES, dual_bn=True)
    variables = _to_flax(clean, adv, model)
    ref = _torch_step(clean, adv, x, y)

    cfg = common.base().method
    cfg.name = "advbn"
    cfg.advbn.update(cut=CUT, group_size=GROUP, steps=STEPS, step_size=STEP, eps=EPS, clamp=True)
    method = methods.get(cfg, model, 10)
    params, model_state = variables["params"], {"batch_stats": variables["batch_stats"]}
    batch = {"image": jnp.asarray(x.permute(0, 2, 3, 1).numpy()), "label": jnp.asarray(y.numpy())}
    (loss, (new_state, metrics)), grads = jax.jit(jax.value_and_grad(method.loss, has_aux=True))(
        params, model_state, batch, jax.random.key(0), 0)

    f = method.features(params, model_state, batch["image"])
    _, pert = method.adversarial_features(params, model_state, f, batch["label"])
    np.testing.assert_allclose(pert["s_mu"], ref["s_mu"], atol=1e-5)
    np.testing.assert_allclose(pert["s_sigma"], ref["s_sigma"], atol=1e-5)
    np.testing.assert_allclose(metrics["adv_loss"], ref["loss_adv"], rtol=2e-5)
    np.testing.assert_allclose(metrics["clean_loss"], ref["loss_clean"], rtol=2e-5)

    # gradients of shared and per-set head parameters
    def close(ours, theirs, what):
        theirs = theirs.detach().numpy()
        if ours.ndim == 4:
            theirs = theirs.transpose(2, 3, 1, 0)
        elif ours.ndim == 2:
            theirs = theirs.T
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(ours, theirs, atol=2e-4 * scale, err_msg=what)

    close(grads["layer3"]["0"]["conv2"]["kernel"], clean.layer3[0].conv2.weight.grad, "shared conv")
    close(grads["fc"]["kernel"], clean.fc.weight.grad, "shared fc")
    close(grads["layer2"]["0"]["bn1"]["clean"]["scale"], clean.layer2[0].bn1.weight.grad, "clean BN")
    close(grads["layer4"]["0"]["shortcut_bn"]["adv"]["bias"], adv.layer4[0].downsample[1].bias.grad, "adv BN")
    assert clean.layer1[0].conv1.weight.grad is None  # the torch front is under no_grad ...
    assert all(float(jnp.abs(v).max()) == 0 for v in jax.tree.leaves(grads["layer1"]))  # ... ours gets zeros

    # running statistics: each set moved by its own pass (torch: unbiased running variance, momentum 0.1)
    for name, m in (("clean", clean), ("adv", adv)):
        bs = new_state["batch_stats"]["layer3"]["0"]["bn2"][name]
        np.testing.assert_allclose(bs["mean"], m.layer3[0].bn2.running_mean.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(bs["var"], m.layer3[0].bn2.running_var.numpy(), rtol=1e-4, atol=1e-5)
    front_bs = new_state["batch_stats"]["layer1"]["0"]["bn1"]["clean"]
    np.testing.assert_array_equal(front_bs["mean"], clean.layer1[0].bn1.running_mean.numpy())


def test_full_torchvision_resnet50_converts_into_the_advbn_start(tmp_path):
    """The reference's starting point: torchvision's own ResNet-50 (random weights, its real state_dict keys)
    through `robust-jax-convert --dual-bn`, strict; both BN sets hold the torch BN, the logits of either set
    equal torchvision's in eval mode, and the AdvBN recipe's model loads the file as `model.init_from`."""
    from configs import imagenet_advbn_resnet50
    from robust_jax import builders
    from robust_jax.models.convert import cli

    net = torch_refs.randomize(torchvision.models.resnet50(weights=None), seed=4).eval()
    pth, out = str(tmp_path / "r50.pth"), str(tmp_path / "r50_dual.msgpack")
    torch.save(net.state_dict(), pth)
    mean, std = common.IMAGENET_MEAN, common.IMAGENET_STD
    assert cli.main(["--model", "resnet50", "--num-classes", "1000", "--dual-bn", "--input", pth, "--output", out,
                     "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std))]) == 0

    config = imagenet_advbn_resnet50.get_config()
    config.model.init_from = out
    model = builders.build_model(config, 1000)
    variables = builders.init_variables(model, config, jax.random.key(0), (64, 64, 3))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = net((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)).numpy()
    xj = jnp.asarray(x.permute(0, 2, 3, 1).numpy())
    for bn in ("clean", "adv"):
        got = model.apply(variables, xj, train=False, bn=bn)
        np.testing.assert_allclose(got, want, atol=2e-4 * np.abs(want).max())
