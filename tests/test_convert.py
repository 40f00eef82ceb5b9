"""PyTorch -> Flax converters: logits parity on AutoAttack's real ResNet-18 checkpoint and on random
weights for every family (eval and train mode, incl. the running-statistics update), strictness, and
the `robust-jax-convert` CLI end to end. Skipped without torch (an optional extra)."""
import importlib.resources
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402

from robust_jax import models  # noqa: E402
from robust_jax.models import convert, variables_io  # noqa: E402
from robust_jax.models.convert import cli  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/ is not a package
import torch_refs  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(2)


def _images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def _torch_logits(net, x_nhwc):
    with torch.no_grad():
        return net(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


def assert_logits_close(got, want, rtol=1e-4):
    """Max abs difference within rtol of the logit scale (max |logit|, at least 1)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err <= rtol * scale, f"max |diff| {err:.3g} > {rtol} * {scale:.3g}"


def _small_wrn(trades_sub_block=True, seed=0):
    """WRN-10-1 in the TRADES layout: the cheapest net with every kind of tensor (conv, BN, shortcut, fc)."""
    torch.manual_seed(seed)
    return torch_refs.randomize(torch_refs.WideResNet(depth=10, widen_factor=1, trades_sub_block=trades_sub_block),
                                seed).eval()


SMALL_WRN_KW = dict(depth=10, widen_factor=1)


def test_real_autoattack_resnet18_matches_torch():
    pytest.importorskip("pyautoattack")
    from pyautoattack.examples.resnet import ResNet18

    path = importlib.resources.files("pyautoattack") / "examples" / "model_test.pt"
    state_dict = convert.load_torch_checkpoint(str(path))
    net = ResNet18()
    net.load_state_dict(state_dict)
    net.eval()
    variables = convert.convert_state_dict(state_dict, "resnet18", num_classes=10)
    x = _images(16, 32)
    got = models.get("resnet18", num_classes=10).apply(variables, x, train=False)
    assert_logits_close(got, _torch_logits(net, x))


def _cifar_resnet18():
    pytest.importorskip("pyautoattack")
    from pyautoattack.examples.resnet import ResNet18
    return ResNet18()


FAMILIES = {  # name: (torch reference factory, model kwargs, batch, image size)
    "resnet18": (_cifar_resnet18, dict(num_classes=10), 4, 32),
    "preact_resnet18": (lambda: torch_refs.PreActResNet18(num_classes=10), dict(num_classes=10), 4, 32),
    "resnet50": (lambda: torch_refs.TorchvisionResNet(num_classes=10), dict(num_classes=10), 2, 64),
    "wrn34_10": (lambda: torch_refs.WideResNet(depth=16, widen_factor=2, trades_sub_block=True),
                 dict(num_classes=10, depth=16, widen_factor=2), 4, 32),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_random_weights_parity_eval_and_train(name):
    factory, kwargs, batch, size = FAMILIES[name]
    torch.manual_seed(0)
    net = torch_refs.randomize(factory(), seed=1).eval()
    model = models.get(name, **kwargs)
    variables = convert.convert_state_dict(net.state_dict(), name, **kwargs)
    x = _images(batch, size, seed=2)

    assert_logits_close(model.apply(variables, x, train=False), _torch_logits(net, x))

    net.train()  # batch statistics, and torch updates its running stats in place
    want = _torch_logits(net, x)
    got, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert_logits_close(got, want, rtol=1e-3)
    want_stats = convert.convert_state_dict(net.state_dict(), name, **kwargs)["batch_stats"]
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(updated["batch_stats"])[0],
                            jax.tree.leaves(want_stats)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_dual_bn_gets_the_torch_bn_in_both_sets():
    net = _small_wrn()
    single = convert.convert_state_dict(net.state_dict(), "wrn34_10", **SMALL_WRN_KW)
    dual = convert.convert_state_dict(net.state_dict(), "wrn34_10", dual_bn=True, **SMALL_WRN_KW)
    for collection, leaf in (("params", "scale"), ("params", "bias"), ("batch_stats", "mean"), ("batch_stats", "var")):
        for mode in ("clean", "adv"):
            np.testing.assert_array_equal(dual[collection]["block2"]["0"]["bn1"][mode][leaf],
                                          single[collection]["block2"]["0"]["bn1"][leaf])
    x = _images(2, 32)
    model = models.get("wrn34_10", dual_bn=True, **SMALL_WRN_KW)
    assert_logits_close(model.apply(dual, x, train=False, bn="adv"), _torch_logits(net, x))


def test_strictness_names_the_offending_key():
    sd = _small_wrn().state_dict()
    convert.convert_state_dict(sd, "wrn34_10", **SMALL_WRN_KW)  # the TRADES sub_block1 is dropped

    with pytest.raises(ValueError, match=r"unexpected torch key 'block1\.layer\.0\.extra\.weight'"):
        convert.convert_state_dict({**sd, "block1.layer.0.extra.weight": torch.zeros(3)}, "wrn34_10", **SMALL_WRN_KW)
    missing = {k: v for k, v in sd.items() if k != "block2.layer.0.convShortcut.weight"}
    with pytest.raises(ValueError, match=r"missing torch key 'block2\.layer\.0\.convShortcut\.weight'"):
        convert.convert_state_dict(missing, "wrn34_10", **SMALL_WRN_KW)
    with pytest.raises(ValueError, match=r"shape mismatch for torch key 'fc\.weight'"):
        convert.convert_state_dict({**sd, "fc.weight": torch.zeros(10, 32)}, "wrn34_10", **SMALL_WRN_KW)
    with pytest.raises(ValueError, match=r"shape mismatch for torch key 'fc\.weight'"):
        convert.convert_state_dict(sd, "wrn34_10", num_classes=100, **SMALL_WRN_KW)
    partly_prefixed = {("module." + k if k.startswith("fc.") else k): v for k, v in sd.items()}
    with pytest.raises(ValueError, match=r"unexpected torch key 'module\.fc\.weight'"):
        convert.convert_state_dict(partly_prefixed, "wrn34_10", **SMALL_WRN_KW)
    with pytest.raises(ValueError, match="no PyTorch converter for model 'small_cnn'"):
        convert.convert_state_dict(sd, "small_cnn")


def test_wrapped_and_dataparallel_checkpoints_are_accepted():
    sd = _small_wrn().state_dict()
    want = convert.convert_state_dict(sd, "wrn34_10", **SMALL_WRN_KW)
    numpy_sd = {k: v.numpy() for k, v in sd.items()}  # the converter needs no torch tensors
    for checkpoint in ({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 7},
                       {"model": sd, "optimizer": {}}, {"net": numpy_sd}):
        got = convert.convert_state_dict(checkpoint, "wrn34_10", **SMALL_WRN_KW)
        jax.tree.map(np.testing.assert_array_equal, got, want)


def test_library_imports_and_converts_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np, jax\n"
            "from robust_jax.models import convert, get\n"
            "m = get('preact_resnet18')\n"
            "t = convert.resnet.expected_variables(m)\n"
            "sd = {convert.resnet.torch_key(tuple(str(p.key) for p in path), convert.resnet.FAMILIES['preact_resnet18'],"
            " False): np.zeros(convert.fill.torch_shape(s.shape, 'kernel'), np.float32)"
            " for path, s in jax.tree_util.tree_flatten_with_path(t)[0]}\n"
            "convert.convert_state_dict(sd, 'preact_resnet18')\n"
            "try:\n    convert.load_torch_checkpoint('setup.py')\n"
            "except ImportError as e:\n    print('ImportError', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ImportError reading PyTorch checkpoints needs torch" in out.stdout


@pytest.fixture(scope="module")
def wrn_checkpoint(tmp_path_factory):
    net = _small_wrn(seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "wrn.pt"  # TRADES-style: wrapped, DataParallel, sub_block1
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}, "epoch": 100}, path)
    return net, str(path)


def test_cli_end_to_end(wrn_checkpoint, tmp_path):
    net, path = wrn_checkpoint
    output = str(tmp_path / "wrn.msgpack")
    argv = ["--model", "wrn34_10", "--num-classes", "10", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25",
            "--model-arg", "depth=10", "--model-arg", "widen_factor=1", "--input", path, "--output", output]
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-m", "robust_jax.models.convert", *argv], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "params: " in run.stdout and "dropping" in run.stderr

    model = models.get("wrn34_10", num_classes=10, mean=(0.5,) * 3, std=(0.25,) * 3, **SMALL_WRN_KW)
    x = _images(4, 32)
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))  # eager init is slow
    variables = variables_io.load_variables(output, template)
    assert_logits_close(model.apply(variables, x, train=False), _torch_logits(net, (x - 0.5) / 0.25))


def test_cli_errors(wrn_checkpoint, tmp_path, capsys):
    _, path = wrn_checkpoint
    out = str(tmp_path / "x.msgpack")
    wrn = ["--model-arg", "depth=10", "--model-arg", "widen_factor=1"]
    assert cli.main(["--model", "wrn34_10", "--input", str(tmp_path / "nope.pt"), "--output", out]) == 1
    assert "no checkpoint file at" in capsys.readouterr().err
    assert cli.main(["--model", "resnet1000", "--input", path, "--output", out]) == 1
    assert "no PyTorch converter for model 'resnet1000'" in capsys.readouterr().err
    assert cli.main(["--model", "wrn34_10", "--num-classes", "100", *wrn, "--input", path, "--output", out]) == 1
    assert "shape mismatch for torch key 'fc.weight'" in capsys.readouterr().err
    assert not os.path.exists(out)
    with pytest.raises(SystemExit):
        cli.main(["--model", "wrn34_10", "--mean", "0,0", "--input", path, "--output", out])
