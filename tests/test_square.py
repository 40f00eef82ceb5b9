"""Square Attack: schedule and window sides read out of the reference, init structure, exact trajectory
parity with `pyautoattack`'s SquareAttack when fed the same random numbers, robust accuracy against the
reference on the twin model, and the search's invariants (ball, box, monotone margin, frozen fooled
examples, query accounting)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robust_jax.attacks import square_attack as sq

REF_NORM = {"linf": "Linf", "l2": "L2"}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The reference runs many tiny ops; with several threads on a shared CPU torch spins (10x the CPU
    time measured here), so it gets one thread for these tests."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _reference():
    pytest.importorskip("torch")
    return pytest.importorskip("pyautoattack.square")


@functools.lru_cache(maxsize=1)
def _twin_setup(n=200):
    from twin import digits_test_points, trained_twin

    apply_fn, params = trained_twin()
    x, y = digits_test_points(n)
    return (lambda xb: apply_fn(params, xb)), params, jnp.asarray(x), jnp.asarray(y)


def _to_torch(x):
    import torch

    return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


# ------------------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize("queries,rescale", [(5000, False), (5000, True), (1000, True), (300, True)])
def test_p_selection_matches_reference(queries, rescale):
    ref = _reference().SquareAttack(None, n_queries=queries, p_init=0.8, eps=0.1, resc_schedule=rescale)
    for it in range(queries):
        assert sq.p_selection(it, p_init=0.8, queries=queries, rescale=rescale) == ref.p_selection(it), it


def _reference_sides(norm, shape, queries, rescale):
    """Window side of every iteration, read from the reference's own `random_int(0, h - s)` calls, on a
    model it can never fool (constant logits, eps tiny) so that it runs all iterations."""
    import torch

    mod = _reference()
    c, h, w = shape
    atk = mod.SquareAttack(lambda xb: 5.0 * torch.nn.functional.one_hot(torch.zeros(len(xb), dtype=torch.long), 10).float(),
                           norm=REF_NORM[norm], n_queries=queries, p_init=0.8, eps=1e-3, resc_schedule=rescale,
                           seed=0, device="cpu")
    highs = []
    real = atk.random_int

    def recording(low=0, high=1, shape=[1]):  # noqa: B006 (the reference's signature)
        highs.append(high)
        return real(low, high, shape)

    atk.random_int = recording
    atk.init_hyperparam(torch.zeros(1, c, h, w))
    atk.attack_single_run(torch.full((1, c, h, w), 0.5), torch.zeros(1, dtype=torch.long))
    per_iter = 2 if norm == "linf" else 4  # (vh, vw) or (vh, vw, vh2, vw2)
    highs = np.asarray(highs).reshape(queries, per_iter)
    assert (highs == highs[:, :1]).all()
    return h - highs[:, 0]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("shape,queries,rescale", [((3, 32, 32), 5000, False), ((1, 16, 16), 1000, True)])
def test_square_sides_match_reference(norm, shape, queries, rescale):
    expected = _reference_sides(norm, shape, queries, rescale)
    sched = sq.make_schedule(queries, shape[1], shape[2], norm=norm, p_init=0.8, rescale=rescale)
    seg = np.searchsorted(sched.starts, np.arange(queries), side="right") - 1
    np.testing.assert_array_equal(sched.sides[seg], expected)
    got = jax.jit(jax.vmap(lambda i: sched.at(i)[1]))(jnp.arange(queries))  # the traced lookup
    np.testing.assert_array_equal(got, expected)
    assert len(set(expected.tolist())) > 3  # the schedule really shrinks the windows


# --------------------------------------------------------------------------------------------- init
def test_l2_window_pattern_matches_reference():
    """The nested-squares pattern for every side an L2 init (h // 5, even for CIFAR) or window can have."""
    import torch

    ref = _reference().SquareAttack(None, norm="L2", eps=0.5, device="cpu")
    torch.manual_seed(0)
    for s in range(2, 41):
        got, want = sq.l2_window_pattern(s), ref.eta(s).numpy()  # the reference transposes at random
        err = min(np.abs(got - want).max(), np.abs(got.T - want).max())
        assert err < 1e-6, (s, err)
    assert np.abs(sq.l2_window_pattern(6) - sq.l2_window_pattern(6).T).max() > 0.1



def _block_signature(delta, h, w):
    """For an L2 init perturbation [H,W,C]: per block-channel norms, cosines with the window pattern and
    with its transpose, and the energy outside the blocks."""
    s0, n, block, _, _ = sq._l2_init_layout(h, w)
    pat = sq.l2_window_pattern(s0)
    norms, cos, cos_t = [], [], []
    for b in range(n):
        rows, cols = np.nonzero(block == b)
        tile = delta[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        for ch in range(delta.shape[-1]):
            t = tile[..., ch]
            norms.append(np.linalg.norm(t))
            cos.append(np.sum(t * pat) / (norms[-1] + 1e-12))
            cos_t.append(np.sum(t * pat.T) / (norms[-1] + 1e-12))
    return np.asarray(norms), np.asarray(cos), np.asarray(cos_t), float(np.sum(np.square(delta[block < 0])))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_init_structure_matches_reference(norm):
    import torch

    mod = _reference()
    b, h, w, c = 6, 16, 16, 3
    eps = 0.05 if norm == "linf" else 0.5
    x = jnp.full((b, h, w, c), 0.5)  # away from the box: no clipping
    init = jax.jit(lambda k: sq.init_point(x, sq.sample_init_draws(k, x, norm=norm), norm=norm, eps=eps) - x)
    ours = np.asarray(init(jax.random.key(0)))
    atk = mod.SquareAttack(lambda xb: 5.0 * torch.nn.functional.one_hot(torch.zeros(len(xb), dtype=torch.long), 10).float(),
                           norm=REF_NORM[norm], n_queries=0, eps=eps, seed=0, device="cpu")
    atk.init_hyperparam(_to_torch(x))
    torch.manual_seed(0)
    _, ref = atk.attack_single_run(_to_torch(x), torch.zeros(b, dtype=torch.long))
    ref = ref.numpy().transpose(0, 2, 3, 1) - 0.5
    for d in (ours, ref):
        if norm == "linf":
            np.testing.assert_allclose(np.abs(d), eps, rtol=1e-5)  # every pixel at +-eps
            np.testing.assert_array_equal(d, np.broadcast_to(d[:, :1], d.shape))  # vertical stripes
            assert 0.3 < np.mean(d > 0) < 0.7
        else:
            np.testing.assert_allclose(np.linalg.norm(d.reshape(b, -1), axis=1), eps, rtol=1e-5)
            transposed, positive = [], []
            for k in range(b):
                norms, cos, cos_t, outside = _block_signature(d[k], h, w)
                assert len(norms) == 25 * c
                np.testing.assert_allclose(norms, eps / np.sqrt(len(norms)), rtol=1e-4)  # equal energy
                best = np.where(np.abs(cos_t) > np.abs(cos), cos_t, cos)
                np.testing.assert_allclose(np.abs(best), 1.0, rtol=1e-5)  # +-pattern or +-its transpose
                assert outside == 0.0  # row/column 15 lie outside the 5x5 grid of 3x3 blocks
                transposed.append(np.abs(cos_t) > np.abs(cos))
                positive.append(best > 0)
            assert 0.2 < np.mean(transposed) < 0.8  # both orientations occur
            assert 0.35 < np.mean(positive) < 0.65  # and both signs (450 draws)


@pytest.mark.parametrize("norm,shape", [("l2", (32, 32, 3)), ("l2", (28, 28, 1)), ("l2", (20, 30, 3)),
                                        ("linf", (32, 32, 3))])
def test_init_equals_reference_with_its_draws(norm, shape):
    """CIFAR-sized, one-channel and non-square images: with the reference's random numbers (regenerated
    from its seed in its order), our start point is the reference's, pixel for pixel."""
    import torch

    mod = _reference()
    b, (h, w, c) = 3, shape
    eps = 0.05 if norm == "linf" else 0.5
    x = jax.random.uniform(jax.random.key(7), (b, h, w, c))
    atk = mod.SquareAttack(lambda xb: 5.0 * torch.nn.functional.one_hot(torch.zeros(len(xb), dtype=torch.long), 10).float(),
                           norm=REF_NORM[norm], n_queries=0, eps=eps, seed=0, device="cpu")
    atk.init_hyperparam(_to_torch(x))
    torch.manual_seed(0)
    _, ref = atk.attack_single_run(_to_torch(x), torch.zeros(b, dtype=torch.long))
    torch.manual_seed(0)
    draws = _reference_init_draws(b, h, w, c, norm)
    ours = jax.jit(functools.partial(sq.init_point, norm=norm, eps=eps))(x, draws)
    np.testing.assert_allclose(np.asarray(ours), ref.numpy().transpose(0, 2, 3, 1), atol=1e-6)


# --------------------------------------------------------------------------------------------- loss
@pytest.mark.parametrize("loss,targeted", [("margin", False), ("ce", False), ("ce", True), ("margin", True)])
def test_margin_and_loss_match_reference(loss, targeted):
    import torch

    mod = _reference()
    logits = np.asarray(jax.random.normal(jax.random.key(5), (64, 10)) * 3.0, np.float32)
    y = np.asarray(jax.random.randint(jax.random.key(6), (64,), 0, 10))
    atk = mod.SquareAttack(lambda xb: torch.from_numpy(logits.copy()), loss=loss, targeted=targeted, eps=0.1)
    ref_margin, ref_loss = atk.margin_and_loss(torch.zeros(64, 1), torch.from_numpy(y.astype(np.int64)))
    margin, lval = sq.margin_and_loss(jnp.asarray(logits), jnp.asarray(y), loss=loss, targeted=targeted)
    np.testing.assert_allclose(margin, ref_margin.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lval, ref_loss.numpy(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- exact replay parity
def _reference_init_draws(b, h, w, c, norm):
    """The start-point draws the reference makes right after `torch.manual_seed`, replayed from torch's
    generator in the same order (Linf: one sign per image, channel and column; L2: per block a transpose
    decision shared by the batch and a sign per image and channel)."""
    import torch

    sign = lambda t: torch.sign(2 * t - 1).numpy().astype(np.float32)  # noqa: E731
    if norm == "linf":
        return sq.Draws(signs=sign(torch.rand([b, c, 1, w])).transpose(0, 2, 3, 1))
    nb = sq.l2_init_blocks(h, w)
    trans, signs = np.zeros((b, nb), bool), np.zeros((b, nb, c), np.float32)
    for k in range(nb):
        trans[:, k] = bool(torch.rand([1]) > 0.5)
        signs[:, k] = sign(torch.rand([b, c, 1, 1]))[..., 0, 0]
    return sq.Draws(signs=signs, transposed=trans)


def _replay(norm, loss, targeted, n=24, queries=150, eps=None, seed=0):
    """Runs the reference's `attack_single_run` under a torch seed, then drives our `square_init` /
    `square_step` with the very random numbers the reference drew (regenerated from the same seed in the
    same order, shared over the batch as the reference shares them). Returns both results."""
    import torch

    mod = _reference()
    from twin import torch_twin

    f, params, x_all, y_all = _twin_setup()
    clean = f(x_all)
    keep = np.nonzero(np.asarray(jnp.argmax(clean, -1) == y_all))[0][:n]
    x, y = x_all[keep], y_all[keep]
    labels = jnp.argsort(clean[keep], -1)[:, -2] if targeted else y
    b, h, w, c = x.shape
    eps = eps if eps is not None else (0.06 if norm == "linf" else 0.6)
    atk = mod.SquareAttack(torch_twin(params), norm=REF_NORM[norm], n_queries=queries, eps=eps, p_init=0.8,
                           loss=loss, targeted=targeted, resc_schedule=False, seed=seed, device="cpu")
    xt, yt = _to_torch(x), torch.from_numpy(np.asarray(labels).astype(np.int64))
    atk.init_hyperparam(xt)
    torch.manual_seed(seed)
    ref_queries, ref_best = atk.attack_single_run(xt, yt)

    torch.manual_seed(seed)
    sign = lambda t: torch.sign(2 * t - 1).numpy().astype(np.float32)
    randint = lambda high: int((high * torch.rand([1])).long())
    init = _reference_init_draws(b, h, w, c, norm)
    kw = dict(norm=norm, eps=eps, loss=loss, targeted=targeted)
    sched = sq.make_schedule(queries, h, w, norm=norm, p_init=0.8, rescale=False)
    state = jax.jit(functools.partial(sq.square_init, f, **kw))(x, labels, init)
    step = jax.jit(functools.partial(sq.square_step, f, x, labels, schedule=sched, **kw))
    for i in range(queries):
        active = np.asarray(state.margin > 0)
        if not active.any():
            break
        s = int(sched.at(i)[1])
        full = lambda v: jnp.full((b,), v, jnp.int32)
        vh, vw = randint(h - s), randint(w - s)
        if norm == "linf":
            draws = sq.Draws(signs=np.broadcast_to(sign(torch.rand([c, 1, 1])).reshape(1, 1, 1, c), (b, 1, 1, c)),
                             vh=full(vh), vw=full(vw))
        else:
            vh2, vw2 = randint(h - s), randint(w - s)
            trans = bool(torch.rand([1]) > 0.5)
            signs = np.ones((b, 1, 1, c), np.float32)
            signs[active] = sign(torch.rand([int(active.sum()), c, 1, 1])).reshape(-1, 1, 1, c)
            draws = sq.Draws(signs=signs, vh=full(vh), vw=full(vw), vh2=full(vh2), vw2=full(vw2),
                             transposed=jnp.full((b,), trans))
        state = step(state, i, draws)
    return state, ref_queries.numpy(), ref_best.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("norm,loss,targeted", [("linf", "margin", False), ("l2", "margin", False), ("l2", "ce", True)])
def test_exact_trajectory_parity_with_reference_draws(norm, loss, targeted):
    state, ref_queries, ref_best = _replay(norm, loss, targeted)
    np.testing.assert_array_equal(np.asarray(state.queries), ref_queries)  # the same acceptance history
    np.testing.assert_allclose(np.asarray(state.x_best), ref_best, atol=2e-5)
    fooled = np.asarray(state.margin) <= 0
    assert 0 < fooled.sum() < len(fooled)  # a run with both outcomes, so the comparison means something
    # and fooled points that stopped before the budget (on a Zen 3 CPU one of them is fooled by the last query)
    assert (ref_queries[fooled] < ref_queries.max()).any()


# -------------------------------------------------------------------------- statistical parity
@functools.lru_cache(maxsize=None)
def _jitted(fn, f, **settings):
    """One jitted attack per setting, shared by the tests (compiles dominate this file's runtime)."""
    return jax.jit(functools.partial(fn, f, **settings))


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_robust_accuracy_matches_reference(norm, eps):
    """Same 200 points, same weights, 300 queries: robust accuracies agree within sampling noise (measured
    spread over seeds: about 0.01-0.015 for either implementation)."""
    import torch

    mod = _reference()
    from twin import torch_twin

    f, params, x, y = _twin_setup()
    queries = 300
    ours = _jitted(sq.square, f, norm=norm, eps=eps, queries=queries)(x, y, jax.random.key(0))
    acc_ours = float(jnp.mean(jnp.argmax(f(ours), -1) == y))
    net = torch_twin(params)
    atk = mod.SquareAttack(net, norm=REF_NORM[norm], eps=eps, n_queries=queries, p_init=0.8, loss="margin",
                           resc_schedule=False, seed=0, device="cpu")
    with torch.no_grad():
        yt = torch.from_numpy(np.asarray(y).astype(np.int64))
        acc_ref = float((net(atk.perturb(_to_torch(x), yt)).argmax(1) == yt).float().mean())
    clean = float(jnp.mean(jnp.argmax(f(x), -1) == y))
    assert acc_ref < clean - 0.1  # the attack does something at this eps
    assert abs(acc_ours - acc_ref) <= 0.05, (acc_ours, acc_ref)


# ----------------------------------------------------------------------------------- properties
@pytest.mark.parametrize("norm,eps", [("linf", 0.06), ("l2", 0.6)])
def test_ball_box_and_returned_points(norm, eps):
    f, _, x, y = _twin_setup()
    x, y = x[:64], y[:64]
    res = _jitted(sq.square_with_info, f, norm=norm, eps=eps, queries=60)(x, y, jax.random.key(1))
    d = np.asarray(res.x_adv - x).reshape(len(x), -1)
    size = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
    assert size.max() <= eps * (1 + 1e-5)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    pred_adv, pred = np.asarray(jnp.argmax(f(res.x_adv), -1)), np.asarray(jnp.argmax(f(x), -1))
    fooled, yn = np.asarray(res.fooled), np.asarray(y)
    assert fooled.any() and (~fooled & (pred == yn)).any()
    assert (pred_adv[fooled] != yn[fooled]).all()
    np.testing.assert_array_equal(d[~fooled], 0.0)  # the others come back unchanged
    assert (np.asarray(res.queries)[pred != yn] == 0).all()  # clean-misclassified points are not attacked
    if norm == "l2":  # fooled points sit on the sphere unless the box cut them
        assert np.median(size[fooled]) > 0.9 * eps


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_monotone_margin_frozen_fooled_and_query_accounting(norm, eps):
    """Replays `square_run`'s loop step by step with its own keys (the result must equal the loop's), and
    checks every iteration: the best margin never increases, a fooled example never changes again, and
    the query count is 1 + the number of iterations the example was still being attacked in (the
    reference's accounting)."""
    f, _, x, y = _twin_setup()
    x, y = x[:48], y[:48]
    queries, key = 40, jax.random.key(2)
    final = _jitted(sq.square_run, f, norm=norm, eps=eps, queries=queries)(x, y, key)

    kw = dict(norm=norm, eps=eps)
    sched = sq.make_schedule(queries, 16, 16, norm=norm, p_init=0.8, rescale=False)
    k_init, k_loop = jax.random.split(key)
    state = jax.jit(lambda k: sq.square_init(f, x, y, sq.sample_init_draws(k, x, norm=norm), **kw))(k_init)

    @jax.jit
    def step(st, i):
        draws = sq.sample_step_draws(jax.random.fold_in(k_loop, i), x, sched.at(i)[1], norm=norm)
        return sq.square_step(f, x, y, st, i, draws, schedule=sched, **kw)

    fooled_at = np.where(np.asarray(state.margin) <= 0, 0, -1)
    for i in range(queries):
        new = step(state, i)
        before, after = np.asarray(state.margin), np.asarray(new.margin)
        assert (after <= before).all()
        done = before <= 0
        np.testing.assert_array_equal(np.asarray(new.x_best)[done], np.asarray(state.x_best)[done])
        np.testing.assert_array_equal(np.asarray(new.queries), np.asarray(state.queries) + ~done)
        fooled_at[(after <= 0) & ~done] = i + 1
        state = new
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(final)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the loop is this trajectory
    q = np.asarray(final.queries)
    np.testing.assert_array_equal(q[fooled_at >= 0], 1 + fooled_at[fooled_at >= 0])
    np.testing.assert_array_equal(q[fooled_at < 0], 1 + queries)
    assert (fooled_at > 0).any() and (fooled_at < 0).any()
    assert (np.asarray(final.margin) < np.asarray(state.margin).max()).any()


def test_restarts_targeted_and_jit():
    f, _, x, y = _twin_setup()
    x, y = x[:64], y[:64]
    settings = dict(norm="linf", eps=0.06, queries=60)  # `one` reuses the ball/box test's compile
    one = _jitted(sq.square_with_info, f, **settings)(x, y, jax.random.key(3))
    two = _jitted(sq.square_with_info, f, restarts=2, **settings)(x, y, jax.random.key(3))
    # restart 0 is the single run; restart 1 only re-attacks what it left robust
    assert bool(jnp.all(two.fooled >= one.fooled)) and int(two.fooled.sum()) > int(one.fooled.sum())
    np.testing.assert_array_equal(two.queries[one.fooled], one.queries[one.fooled])
    robust_after_one = np.asarray(~one.fooled & (jnp.argmax(f(x), -1) == y))
    assert (np.asarray(two.queries)[robust_after_one] > 61).all()
    assert float(two.queries.max()) <= 2 * 61

    clean = f(x)
    res = _jitted(sq.square_with_info, f, norm="linf", eps=0.1, queries=60, targeted=True)(x, y, jax.random.key(4))
    np.testing.assert_array_equal(res.target, jnp.argsort(clean, -1)[:, -2])
    fooled = np.asarray(res.fooled)
    assert fooled.any()
    np.testing.assert_array_equal(np.asarray(jnp.argmax(f(res.x_adv), -1))[fooled], np.asarray(res.target)[fooled])
    np.testing.assert_array_equal(np.asarray(res.x_adv)[~fooled], np.asarray(x)[~fooled])


def test_bad_arguments_fail_loudly():
    f = lambda xb: xb.reshape(len(xb), -1)[:, :3]
    x, y = jnp.zeros((2, 8, 8, 3)), jnp.zeros(2, jnp.int32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="norm"):
        sq.square(f, x, y, key, norm="l1", eps=0.1)
    with pytest.raises(ValueError, match="loss"):
        sq.square(f, x, y, key, norm="linf", eps=0.1, loss="dlr")
    with pytest.raises(ValueError, match="5x5"):
        sq.square(f, jnp.zeros((2, 4, 4, 3)), y, key, norm="l2", eps=0.1)
    with pytest.raises(ValueError, match="target_rank"):
        sq.square(f, x, y, key, norm="linf", eps=0.1, targeted=True, target_rank=4)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        sq.square(f, x + 2.0, y, key, norm="linf", eps=0.1)
