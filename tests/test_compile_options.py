"""robust_jax.compile_options: the faster XLA:CPU conv path and the quicker codegen level are applied on CPU,
turned off by the config field and the environment variable, left to the user where XLA_FLAGS names them, and
never given to other backends or unmeasured jaxlib versions."""
import jax
import jax.numpy as jnp
import pytest

from robust_jax import compile_options as co

needs_supported_jaxlib = pytest.mark.skipif(not co.jaxlib_supported(), reason="jaxlib outside JAXLIB_RANGE")


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(co.ENV, raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # read at each call; the backend is initialised already
    before = co._state["config"]
    yield
    co._state["config"] = before


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _compiled_text(jitted):
    x, w = jnp.ones((4, 16, 16, 32)), jnp.ones((3, 3, 32, 32))  # big enough for a YNNPACK fusion
    return jitted.lower(x, w).compile().as_text()


@needs_supported_jaxlib
def test_applied_on_cpu():
    co.configure(True)
    assert jax.default_backend() == "cpu"
    assert co.cpu_compiler_options() == co.CPU_OPTIONS
    # the convolution leaves YNNPACK (Eigen path) with the options, stays there without them
    assert "__ynn_fusion" not in _compiled_text(co.jit(_conv))
    assert "__ynn_fusion" in _compiled_text(jax.jit(_conv))
    x, w = jax.random.normal(jax.random.key(0), (2, 8, 8, 16)), jax.random.normal(jax.random.key(1), (3, 3, 16, 16))
    assert jnp.allclose(co.jit(_conv)(x, w), jax.jit(_conv)(x, w), atol=1e-4)


@needs_supported_jaxlib
def test_switches_turn_it_off(monkeypatch):
    import ml_collections

    from configs import common

    base = common.base()
    assert base.xla_cpu_fast_conv is True
    co.configure(base)
    assert co.cpu_compiler_options() == co.CPU_OPTIONS
    with base.unlocked():
        base.xla_cpu_fast_conv = False
    co.configure(base)
    assert co.cpu_compiler_options() == {}
    # the jitted function follows the switch at call time (cached jits in the evaluation engine included)
    f = co.jit(_conv)
    assert "__ynn_fusion" in _compiled_text(f)
    co.configure(ml_collections.ConfigDict({"seed": 0}))  # a config without the field: default on
    assert co.cpu_compiler_options() == co.CPU_OPTIONS
    assert "__ynn_fusion" not in _compiled_text(f)
    for off in ("0", "false", "off"):
        monkeypatch.setenv(co.ENV, off)
        assert co.cpu_compiler_options() == {}
    monkeypatch.setenv(co.ENV, "1")
    assert co.cpu_compiler_options() == co.CPU_OPTIONS
    assert co.cpu_compiler_options(fast_conv=False) == {}
    # a user's own XLA_FLAGS choice wins, option by option
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
    assert co.cpu_compiler_options() == co.QUICK_CODEGEN
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3")
    assert co.cpu_compiler_options() == co.FAST_CONV
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=2 --xla_cpu_experimental_ynn_fusion_type=")
    assert co.cpu_compiler_options() == {}


@needs_supported_jaxlib
def test_quick_codegen_keeps_every_bit():
    """QUICK_CODEGEN only lowers LLVM's optimisation of XLA's own loops: a program of the kinds the package
    compiles (conv, BatchNorm-like statistics, softmax cross-entropy, its input and weight gradients, a sort)
    returns the same bits at -O1 as at XLA's default level 3 (named here: the suite itself compiles at -O0,
    which contracts no multiply-adds and so rounds differently, tests/xla_flags.py)."""
    def program(x, w, y):
        def loss(x, w):
            h = _conv(x, w)
            h = (h - h.mean((0, 1, 2))) * jax.lax.rsqrt(h.var((0, 1, 2)) + 1e-5)
            logits = jax.nn.gelu(h).mean((1, 2))
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))
        value, (gx, gw) = jax.value_and_grad(loss, (0, 1))(x, w)
        return value, gx, gw, jnp.argsort(gx.reshape(len(x), -1), axis=1)

    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 16))
    w = jax.random.normal(jax.random.key(1), (3, 3, 16, 16)) * 0.1
    y = jnp.array([0, 3, 5, 15])
    quick = jax.jit(program, compiler_options=co.CPU_OPTIONS)
    assert "xla_backend_optimization_level" in co.CPU_OPTIONS
    default = jax.jit(program, compiler_options={**co.FAST_CONV, "xla_backend_optimization_level": 3})
    for a, b in zip(quick(x, w, y), default(x, w, y)):
        assert a.dtype == b.dtype and bool(jnp.all(a == b))


@needs_supported_jaxlib
def test_a_programs_own_options_follow_the_same_rules(monkeypatch):
    """`jit(fn, cpu_options=...)` compiles with that program's options instead of CPU_OPTIONS (here FAST_CONV
    alone, visible in the compiled conv), under the same switch, backend and XLA_FLAGS rules."""
    co.configure(True)
    own = {"xla_cpu_use_fusion_emitters": False, **co.FAST_CONV}
    assert co.applicable(own) == own and co.applicable({}) == {}
    assert "__ynn_fusion" not in _compiled_text(co.jit(_conv, cpu_options=co.FAST_CONV))
    assert "__ynn_fusion" in _compiled_text(co.jit(_conv, cpu_options={"xla_cpu_use_fusion_emitters": False}))
    assert co.applicable(own, "gpu") == {} and co.applicable(own, "tpu") == {}
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    assert co.applicable(own) == co.FAST_CONV
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setenv(co.ENV, "0")
    assert co.applicable(own) == {}
    monkeypatch.delenv(co.ENV)
    co.configure(False)
    assert co.applicable(own) == {}


def test_other_backends_and_versions_get_none():
    co.configure(True)
    for backend in ("gpu", "cuda", "rocm", "tpu", "METAL"):
        assert co.cpu_compiler_options(backend) == {}
    assert co.jaxlib_supported("0.10.2") and co.jaxlib_supported("0.10.5.dev20260101")
    for v in ("0.10.1", "0.9.2", "0.11.0", "0.11.0rc1", "1.0.0"):
        assert not co.jaxlib_supported(v), v


def test_jit_passes_arguments_through():
    f = co.jit(lambda x, n: sum(x for _ in range(n)), static_argnums=1)  # range(n) fails unless n is static
    assert float(f(jnp.float32(2.0), 3)) == 6.0 and float(f(jnp.float32(2.0), 4)) == 8.0
    g = co.jit(static_argnames="n")(lambda x, n: x + n)
    assert float(g(jnp.float32(1.0), n=2)) == 3.0
