"""AutoAttack (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020): the driver that runs an ensemble of attacks with sequential filtering.

The driver follows `pyautoattack==0.2.0` (`autoattack.py`): clean-correct points are found first; each
attack then runs only on the points still robust, and a point counts as broken as soon as one attack
returns a misclassified point for it (the per-point worst case over the ensemble). Versions:

| version  | attacks (in order) |
|----------|--------------------|
| standard | APGD-CE (100 it), APGD-T (DLR, 9 targets), FAB-T (9 targets), Square (5000 queries) |
| plus     | APGD-CE, APGD-DLR (5 restarts each), FAB (5 restarts), Square, APGD-T, FAB-T |
| rand     | APGD-CE, APGD-DLR with EOT over 20 draws of a randomised model (`apply_fn(variables, x, key)`) |
| custom   | `attacks=[...]`: names from the table above and/or `(name, attack)` pairs |

Named attacks in version="custom" take the reference's constructor defaults (APGD-CE/-DLR and FAB with
5 restarts, APGD-T/FAB-T with 1 restart). A `(name, attack)` pair is any `attack(logits_fn, x, y, key)
-> x_adv` with its settings bound (e.g. `functools.partial(pgd, norm=..., eps=..., ...)`, including its
`bounds` when they are not [0,1]).

Mechanics: on the host, the still-robust points are gathered, cut into batches of `batch_size` and each
batch padded (by repeating its own points, so an attack never sees a point already broken) up to a
bucketed size (n rounded up to a sixteenth of its octave: exact up to 32 points, < 1/16 waste above; a
multiple of the mesh's data axis), and an attack reuses a size it has compiled when that wastes at most
1/10 (or one point), so the number of shapes and hence compiles stays small. Each attack is `jax.jit`ted
once with the variables as an argument; the compiled program attacks the batch and predicts the class of
the result. Keys are folded from `seed`.

Deliberate differences from the reference:
- targeted attacks loop over target ranks outside the batches (for each rank, every still-robust point),
  the reference loops inside each batch; per point the sequence of attacks is the same;
- the number of targets is min(n_target_classes, n_classes - 1) (AutoAttack issue #110; the reference
  fails with fewer than 10 classes);
- random numbers come from JAX keys (one per attack, target rank and batch), not torch's generator
  re-seeded per batch, so individual outcomes differ from the reference's and robust accuracies agree
  within the attacks' randomness;
- after every attack stops early because no robust point is left, the skipped attacks are recorded with
  robust accuracy 0 (the reference leaves them out);
- the final check raises on an invalid result (sanity_checks.check_result) instead of logging it.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from robust_jax import compile_options
from robust_jax.attacks import sanity_checks
from robust_jax.checks import check_bounds, check_images, check_labels

VERSIONS = ("standard", "plus", "rand", "custom")
ATTACK_NAMES = ("apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr", "fab")
_NORMS = {"linf": "linf", "l2": "l2"}


@dataclasses.dataclass
class AutoAttackResult:
    x_adv: np.ndarray          # [N,H,W,C] float32; = x where not fooled
    clean_correct: np.ndarray  # bool [N]
    robust: np.ndarray         # bool [N], after all attacks
    per_attack: dict           # ordered {attack name: robust accuracy (fraction) after that attack}
    clean_accuracy: float
    robust_accuracy: float
    seconds: float
    attack_seconds: dict = dataclasses.field(default_factory=dict)  # {attack name: wall seconds}
    # {attack name: (points attacked, points run incl. padding)}, summed over batches and target ranks
    attack_points: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Stage:
    """One attack of the ensemble. `attack(logits_fn, x, y, key, target_rank)`; `targeted` stages run once
    per target rank 2..n_targets+1 (rank k = the class with the k-th largest clean logit)."""
    name: str
    attack: Callable
    targeted: bool = False


def _apgd_stage(name, *, norm, eps, bounds, restarts, loss, eot_iter=1):
    def attack(logits_fn, x, y, key, target_rank):
        from robust_jax.attacks.auto_pgd import apgd
        kw = dict(target_rank=target_rank) if target_rank is not None else {}
        return apgd(logits_fn, x, y, key, norm=norm, eps=eps, steps=100, restarts=restarts, loss=loss,
                    rho=0.75, eot_iter=eot_iter, bounds=bounds, **kw)
    return _Stage(name, attack, targeted=loss.endswith("targeted"))


def _fab_stage(name, *, norm, eps, bounds, restarts, targeted):
    def attack(logits_fn, x, y, key, target_rank):
        from robust_jax.attacks.fab_attack import fab
        kw = dict(target_rank=target_rank) if target_rank is not None else {}
        return fab(logits_fn, x, y, key, norm=norm, eps=eps, steps=100, restarts=restarts, targeted=targeted,
                   alpha_max=0.1, eta=1.05, beta=0.9, bounds=bounds, **kw)
    return _Stage(name, attack, targeted=targeted)


def _square_stage(name, *, norm, eps, bounds):
    def attack(logits_fn, x, y, key, target_rank):
        from robust_jax.attacks.square_attack import square
        return square(logits_fn, x, y, key, norm=norm, eps=eps, queries=5000, p_init=0.8, restarts=1,
                      loss="margin", rescale_schedule=False, bounds=bounds)
    return _Stage(name, attack)


def _named_stage(name: str, *, norm, eps, bounds, version):
    """The reference's settings of each attack for a version (custom: its constructor defaults)."""
    many = 1 if version in ("standard", "rand") else 5
    eot = 20 if version == "rand" else 1
    kw = dict(norm=norm, eps=eps, bounds=bounds)
    if name == "apgd-ce":
        return _apgd_stage(name, restarts=many, loss="ce", eot_iter=eot, **kw)
    if name == "apgd-dlr":
        return _apgd_stage(name, restarts=many, loss="dlr", eot_iter=eot, **kw)
    if name == "apgd-t":
        return _apgd_stage(name, restarts=1, loss="dlr-targeted", **kw)
    if name == "fab":
        return _fab_stage(name, restarts=many, targeted=False, **kw)
    if name == "fab-t":
        return _fab_stage(name, restarts=1, targeted=True, **kw)
    if name == "square":
        return _square_stage(name, **kw)
    raise ValueError(f"unknown AutoAttack attack {name!r}; known: {ATTACK_NAMES} or a (name, callable) pair")


def _custom_stage(name: str, fn: Callable) -> _Stage:
    return _Stage(name, lambda logits_fn, x, y, key, target_rank: fn(logits_fn, x, y, key))


VERSION_ATTACKS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
                   "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
                   "rand": ("apgd-ce", "apgd-dlr")}


def _bucket(n: int, batch_size: int, multiple: int) -> int:
    """Padded batch size for n points: n rounded up to a sixteenth of its octave (a multiple of
    2^(bitlen(n-1)-5), at least 1), so padding wastes less than 1/16 of the work and n <= 32 runs exactly
    (the last few robust points are not run as a bucket of 8 or 16); at most `batch_size`; rounded up to a
    multiple of `multiple` (the mesh's data-axis size). Shapes stay few: an attack sees one bucket per
    batch of a run, and reuses a size it has compiled when that pads little more (`_reuse`)."""
    step = 1 << max(0, max(0, n - 1).bit_length() - 5)
    size = min(-(-n // step) * step, batch_size)
    return -(-max(size, n, 1) // multiple) * multiple


def _reuse(n: int, bucket: int, compiled) -> int:
    """The size to run n points at, given the sizes an attack has compiled already: the smallest compiled
    size from n up to n + max(1, n/10) (a recompile costs more than that padding when an attack's points
    shrink by a few between target ranks), else `bucket`."""
    fits = [s for s in compiled if n <= s <= max(bucket, n + max(1, n // 10))]
    return min(fits) if fits else bucket


class AutoAttack:
    """AutoAttack on a pure `apply_fn(variables, x) -> logits` (inference mode) on NHWC images in the box
    `bounds=(lo, hi)` (default [0,1]): the named attacks keep their points in it, and the final check
    requires every returned point to lie in it.

    `AutoAttack(apply_fn, norm="Linf", eps=8/255).run(variables, x, y)` -> `AutoAttackResult`. For
    version="rand", `apply_fn(variables, x, key)`. `n_target_classes` caps the targets of APGD-T/FAB-T
    (min(n_target_classes, n_classes - 1) are used). `mesh`: shard each batch along its data axis.
    `log`: where progress lines go (None: silent); `progress`: a tqdm bar (where tqdm is installed);
    `checks`: the sanity checks. An instance keeps its compiled attacks: run it again (other points, other
    variables of the same shapes) rather than building a new one. Across processes, JAX's persistent
    compilation cache (`jax.config.update("jax_compilation_cache_dir", path)`, a process-wide setting this
    class never changes) keeps the compiled programs on disk.
    """

    def __init__(self, apply_fn: Callable, *, norm: str, eps: float, version: str = "standard",
                 attacks: Optional[Sequence[Union[str, Tuple[str, Callable]]]] = None, seed: int = 0,
                 batch_size: int = 500, n_target_classes: int = 9, mesh=None, log: Optional[Callable] = print,
                 progress: bool = True, checks: bool = True, bounds=(0.0, 1.0)):
        if str(norm).lower() not in _NORMS:
            raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        if version != "custom" and attacks is not None:
            raise ValueError(f"attacks=... is only used with version='custom' (version {version!r} fixes them)")
        if version == "custom" and not attacks:
            raise ValueError("version='custom' needs attacks=[...] (names and/or (name, callable) pairs)")
        if batch_size < 1 or n_target_classes < 1:
            raise ValueError(f"batch_size and n_target_classes must be >= 1, got {batch_size}, {n_target_classes}")
        self.apply_fn, self.norm, self.eps, self.version = apply_fn, _NORMS[str(norm).lower()], float(eps), version
        self.bounds = check_bounds(bounds)
        self.seed, self.n_target_classes, self.mesh = seed, n_target_classes, mesh
        self.log, self.progress, self.checks = log or (lambda *_: None), progress, checks
        self.randomized = version == "rand"
        stages = []
        for a in (attacks if version == "custom" else VERSION_ATTACKS[version]):
            if isinstance(a, str):
                stages.append(_named_stage(a, norm=self.norm, eps=self.eps, bounds=self.bounds, version=version))
            else:
                name, fn = a
                if not callable(fn):
                    raise ValueError(f"custom attack {name!r} must be callable(logits_fn, x, y, key) -> x_adv")
                stages.append(_custom_stage(str(name), fn))
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"attack names must be unique, got {names}")
        self.stages = tuple(stages)
        self.multiple = 1 if mesh is None else int(mesh.shape[_data_axis()])
        self.batch_size = -(-batch_size // self.multiple) * self.multiple
        self._jitted, self._static_rank, self._sizes = {}, set(), {}
        self._predict = compile_options.jit(self._predict_impl)
        self._forward = compile_options.jit(lambda v, xb: self.apply_fn(v, xb))
        self._probe = compile_options.jit(self._probe_impl)

    # --- the compiled pieces ---------------------------------------------------------------------------
    def _logits(self, variables, x, key):
        return self.apply_fn(variables, x, key) if self.randomized else self.apply_fn(variables, x)

    def _logits_fn(self, variables):
        if self.randomized:
            return lambda x, key: self.apply_fn(variables, x, key)
        return lambda x: self.apply_fn(variables, x)

    def _predict_impl(self, variables, x, key):
        return jnp.argmax(self._logits(variables, x, key), axis=-1)

    def _probe_impl(self, variables, x, y, key):
        """The sanity checks' program: `sanity_checks.probe_model` (two forward passes for the randomness
        check unless the model is randomised by design, and the input gradients)."""
        return sanity_checks.probe_model(lambda xa: self._logits(variables, xa, key), x, y,
                                         passes=1 if self.randomized else 2)

    def _attack_and_predict(self, stage, variables, x, y, key, target_rank):
        k_attack, k_pred = jax.random.split(key)
        x_adv = jax.lax.stop_gradient(stage.attack(self._logits_fn(variables), x, y, k_attack, target_rank))
        return x_adv, self._predict_impl(variables, x_adv, k_pred)

    def _compiled(self, stage, static_rank: bool):
        """One jitted program per stage (jit caches one executable per bucket shape). The target rank is
        traced, so one executable serves every target; an attack that needs it concrete gets it static."""
        k = (stage.name, static_rank)
        if k not in self._jitted:
            fn = functools.partial(self._attack_and_predict, stage)
            self._jitted[k] = compile_options.jit(fn, static_argnums=(4,) if static_rank else ())
        return self._jitted[k]

    def _run_stage(self, stage, variables, xb, yb, key, target_rank):
        if not stage.targeted:
            return self._compiled(stage, True)(variables, xb, yb, key, None)
        if stage.name not in self._static_rank:
            try:
                return self._compiled(stage, False)(variables, xb, yb, key, jnp.int32(target_rank))
            except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError,
                    jax.errors.TracerBoolConversionError):
                self._static_rank.add(stage.name)
        return self._compiled(stage, True)(variables, xb, yb, key, int(target_rank))

    # --- host-side batching ----------------------------------------------------------------------------
    def _put(self, *arrays):
        if self.mesh is None:
            return arrays
        from robust_jax import parallel
        return tuple(jax.device_put(a, parallel.batch_sharding(self.mesh)) for a in arrays)

    def _batches(self, idx, compiled=None):
        """Yields (chunk indices, padded indices) covering `idx` in batches. `compiled`: a set of the sizes an
        attack has run at (updated here), so a size within 1/10 is reused rather than compiled anew."""
        for start in range(0, len(idx), self.batch_size):
            chunk = idx[start:start + self.batch_size]
            size = _bucket(len(chunk), self.batch_size, self.multiple)
            if compiled is not None:
                size = _reuse(len(chunk), size, compiled)
                compiled.add(size)
            yield chunk, np.resize(chunk, size)

    def predict(self, variables, x, key=None) -> np.ndarray:
        """Predicted classes of x (host numpy), in padded buckets of the attack batches."""
        key = jax.random.key(self.seed) if key is None else key
        out = np.empty(len(x), np.int64)
        for b, (chunk, padded) in enumerate(self._batches(np.arange(len(x)))):
            (xb,) = self._put(x[padded])
            out[chunk] = np.asarray(self._predict(variables, xb, jax.random.fold_in(key, b)))[:len(chunk)]
        return out

    # --- the evaluation ----------------------------------------------------------------------------------
    def _sanity_checks(self, variables, x, y, n_classes, n_targets):
        """The checks before attacking, on the first batch padded as `predict` pads it (one compiled program
        of the same shape; only its real points are checked)."""
        chunk, padded = next(self._batches(np.arange(len(x))))
        xs, ys = self._put(x[padded], y[padded])
        outputs, grads = self._probe(variables, xs, ys, jax.random.key(self.seed))
        outputs = [np.asarray(o)[:len(chunk)] for o in outputs]
        if not self.randomized:
            sanity_checks.check_randomized(outputs, y[chunk], log=self.log)
        sanity_checks.check_range_output(outputs[0], log=self.log)
        correct = outputs[0].argmax(-1) == y[chunk]  # the attacks only see clean-correct points
        if correct.any():
            at_correct = {k: np.asarray(g)[:len(chunk)][correct] for k, g in grads.items()}
            sanity_checks.check_zero_gradients(at_correct, log=self.log)
        sanity_checks.check_n_classes(n_classes, [s.name for s in self.stages], n_targets, log=self.log)

    def run(self, variables, x, y) -> AutoAttackResult:
        """Evaluates (x, y): x float32 NHWC in the box `bounds`, y int labels. Returns an `AutoAttackResult`."""
        t_start = time.time()
        x = np.ascontiguousarray(np.asarray(x, np.float32))
        check_images(x, "x", self.bounds)
        y = np.asarray(y)
        check_labels(y, len(x), "y")
        y = y.astype(np.int32)
        if self.mesh is not None:
            from robust_jax import parallel
            variables = parallel.replicate(variables, self.mesh)
        root = jax.random.key(self.seed)
        n = len(x)
        n_classes = int(jax.eval_shape(lambda v, xb: self._logits(v, xb, root), variables, x[:1]).shape[-1])
        if n_classes < 2:
            raise ValueError(f"the model has {n_classes} output(s); AutoAttack needs logits of >= 2 classes")
        check_labels(y, n, "y", num_classes=n_classes)
        n_targets = max(1, min(self.n_target_classes, n_classes - 1))
        self.log(f"using {self.version} version including {', '.join(s.name for s in self.stages)}.")
        if self.checks:
            self._sanity_checks(variables, x, y, n_classes, n_targets)

        clean_correct = self.predict(variables, x, jax.random.fold_in(root, 10**6)) == y
        robust, x_adv = clean_correct.copy(), x.copy()
        per_attack, attack_seconds, attack_points = {"clean": float(clean_correct.mean())}, {}, {}
        self.log(f"initial accuracy: {clean_correct.mean():.2%}")
        bar = _progress_bar(total=len(self.stages), enabled=self.progress)
        t_attacks = time.time()
        for s_i, stage in enumerate(self.stages):
            t0 = time.time()
            sizes, points = self._sizes.setdefault(stage.name, set()), [0, 0]
            ranks = range(2, n_targets + 2) if stage.targeted else [None]
            if not robust.any():
                self.log(f"no robust points left, skipping {stage.name}")
            for t_i, rank in enumerate(ranks):
                idx = np.flatnonzero(robust)
                n_batches = -(-len(idx) // self.batch_size)
                for b, (chunk, padded) in enumerate(self._batches(idx, sizes)):
                    points[0] += len(chunk)
                    points[1] += len(padded)
                    bar.set_postfix_str(f"{stage.name}" + (f" target {rank}" if rank else "")
                                        + f" batch {b + 1}/{n_batches}, robust {int(robust.sum())}/{n}")
                    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(root, s_i), t_i), b)
                    xb, yb = self._put(x[padded], y[padded])
                    adv, pred = self._run_stage(stage, variables, xb, yb, key, rank)
                    adv, pred = np.asarray(adv)[:len(chunk)], np.asarray(pred)[:len(chunk)]
                    fooled = pred != y[chunk]
                    x_adv[chunk[fooled]] = adv[fooled]
                    robust[chunk[fooled]] = False
                    self.log(f"{stage.name}" + (f" target {rank}" if rank else "")
                             + f" - {b + 1}/{n_batches} - {int(fooled.sum())} out of {len(chunk)} successfully perturbed")
            attack_seconds[stage.name] = time.time() - t0
            attack_points[stage.name] = tuple(points)
            per_attack[stage.name] = float(robust.mean())
            bar.update(1)
            bar.set_postfix_str(f"robust {int(robust.sum())}/{n}")
            self.log(f"robust accuracy after {stage.name.upper()}: {robust.mean():.2%} "
                     f"(total time {time.time() - t_attacks:.1f} s)")
        bar.close()
        if self.checks:
            sanity_checks.check_square_sr(per_attack, log=self.log)

        fooled = clean_correct & ~robust
        logits = None
        if not self.randomized:  # a randomised model need not repeat its prediction
            logits = np.zeros((n, n_classes), np.float32)
            for chunk, padded in self._batches(np.flatnonzero(fooled)):
                logits[chunk] = np.asarray(self._forward(variables, *self._put(x_adv[padded])))[:len(chunk)]
        norms = sanity_checks.perturbation_norms(x_adv, x, self.norm)
        self.log(f"max {'Linf' if self.norm == 'linf' else 'L2'} perturbation: {norms.max(initial=0.0):.5f}, "
                 f"nan in tensor: {int(np.isnan(x_adv).sum())}, max: {x_adv.max():.5f}, min: {x_adv.min():.5f}")
        sanity_checks.check_result(x, x_adv, y, fooled, norm=self.norm, eps=self.eps, logits=logits,
                                   bounds=self.bounds)
        self.log(f"robust accuracy: {robust.mean():.2%}")
        per_attack.pop("clean")
        return AutoAttackResult(x_adv=x_adv, clean_correct=clean_correct, robust=robust, per_attack=per_attack,
                                clean_accuracy=float(clean_correct.mean()), robust_accuracy=float(robust.mean()),
                                seconds=time.time() - t_start, attack_seconds=attack_seconds,
                                attack_points=attack_points)


def _data_axis():
    from robust_jax import parallel
    return parallel.DATA_AXIS


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass


def _progress_bar(*, total: int, enabled: bool):
    """A tqdm bar over the attacks, or a silent stand-in when disabled or tqdm is not installed (the attacks
    need only jax; tqdm comes with robust_jax's own install)."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="AutoAttack", unit="attack")
