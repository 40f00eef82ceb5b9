"""MixACM (Awais et al., NeurIPS 2021): robustness transfer from a frozen robust teacher to a student by mixup and
distillation of activated channel maps, with no adversarial example generated in training.

Per step, for a batch mixed by the shared mixing fields (`mixup_alpha`, ...; the mixacm configs use mixup with
alpha 1, ours) into images x and soft targets t, with the student f in train mode and the teacher g in eval mode:

    loss = CE(f(x), t) + kd_weight * T^2 * KL(softmax(g(x)/T) || softmax(f(x)/T))
                       + acm_weight * sum_k mean_batch d(P_k f_{b_k}(x), g_{b'_k}(x))

f_b / g_b are block taps (`acm.taps`: stem and stage outputs), pairs (b_k, b'_k) = (blocks[k], teacher_blocks[k]),
d the ACM distance (`acm.acm_distance`, variant 'channel' or 'spatial') and P_k a 1x1 projection where the
widths differ (identity otherwise). The teacher's variables are an argument (frozen variables of the jitted
step), stop-gradient'ed; it runs in eval mode and its state is never updated. Both networks see the same x.
The paper gives the loss terms but not the mapping, weights, temperature, blocks or mixup alpha: the defaults
here (T 4, kd_weight 1, acm_weight 10, the last three taps, channel ACM) are OURS (docs/mixacm.md).

The projections are the method's own parameters, `params[state.METHOD_PARAMS]` (`acm.init_projections`): the
optimiser trains them with the student, and evaluation and exported variables leave them out.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from robust_jax.attacks.losses import cross_entropy
from robust_jax.checks import check_batch
from robust_jax.methods import acm as acm_lib
from robust_jax.methods.base import Classifier, Method, accuracy, block_values
from robust_jax.methods.standard import CONFIG as MIXING_CONFIG
from robust_jax.methods.standard import mixed_targets, mixing_from_config
from robust_jax.mixing import BatchMixing
from robust_jax.models import teacher_io
from robust_jax.state import METHOD_PARAMS, split_params

RANDOM_INIT = teacher_io.RANDOM_INIT


@dataclasses.dataclass(frozen=True)
class MixACMSettings:
    """The MixACM-specific settings (`config.method.mixacm` minus the teacher); defaults are ours.
    blocks / teacher_blocks: tap indices of the student / teacher (negative: from the last; teacher_blocks ()
    = blocks); projection: a trained 1x1 projection where widths differ (False: an error naming the widths)."""

    kd_weight: float = 1.0
    temperature: float = 4.0
    acm_weight: float = 10.0
    acm: str = "channel"
    blocks: Sequence[int] = (-3, -2, -1)
    teacher_blocks: Sequence[int] = ()
    projection: bool = True

    def __post_init__(self):
        if self.acm not in acm_lib.VARIANTS:
            raise ValueError(f"method.mixacm.acm must be one of {acm_lib.VARIANTS}, got {self.acm!r}")
        if self.temperature <= 0 or self.kd_weight < 0 or self.acm_weight < 0:
            raise ValueError(f"method.mixacm needs temperature > 0 and kd_weight, acm_weight >= 0, got {self}")
        if self.acm_weight and not self.blocks:
            raise ValueError("method.mixacm.blocks is empty but acm_weight > 0: name the blocks to distil")
        if self.teacher_blocks and len(self.teacher_blocks) != len(self.blocks):
            raise ValueError(f"method.mixacm.teacher_blocks {tuple(self.teacher_blocks)} must pair one to one with "
                             f"blocks {tuple(self.blocks)} (or be () to use the same indices)")

    @property
    def block_pairs(self):
        return tuple(zip(self.blocks, self.teacher_blocks or self.blocks))


# teacher: checkpoint = a training workdir of this project, a converted .msgpack (+ name, kwargs with mean/std) or
#   'random-init' (smoke tests only); the other fields: MixACMSettings.
CONFIG = dict(MIXING_CONFIG, mixacm=dict(teacher=dict(checkpoint="", name="", kwargs={}),
                                         **{f.name: f.default for f in dataclasses.fields(MixACMSettings)}))


def forward(apply_fn, params, model_state, x, *, train: bool, rng=None, with_taps: bool = True):
    """(logits, new model_state, block taps) of a classifier; taps [] when `with_taps` is False. In eval mode
    the state comes back unchanged (only the `intermediates` collection is mutable)."""
    if not with_taps:
        logits, model_state = Classifier(apply_fn)(params, model_state, x, train=train, rng=rng)
        return logits, model_state, []
    kwargs = {"rngs": {"dropout": rng}} if (train and rng is not None) else {}
    mutable = ["intermediates"] + (list(model_state) if train else [])
    logits, updates = apply_fn({"params": params, **model_state}, x, train=train, mutable=mutable, **kwargs)
    updates = dict(updates)
    taps = acm_lib.taps(updates.pop("intermediates", {}), acm_lib.tap_names(apply_fn))
    return logits, ({**model_state, **updates} if train else model_state), taps


def kd_loss(student_logits, teacher_logits, temperature: float):
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), per example."""
    log_p_t = jax.nn.log_softmax(teacher_logits / temperature, -1)
    log_p_s = jax.nn.log_softmax(student_logits / temperature, -1)
    return temperature ** 2 * jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), -1)


def acm_loss(student_taps, teacher_taps, projections, settings: MixACMSettings):
    """Sum over the block pairs of the batch-mean ACM distance (projecting the student where needed)."""
    s_blocks, t_blocks = zip(*settings.block_pairs)
    s_feats = acm_lib.pick(student_taps, s_blocks, who="student")
    t_feats = acm_lib.pick(teacher_taps, t_blocks, who="teacher")
    total = 0.0
    for k, (s, t) in enumerate(zip(s_feats, t_feats)):
        name = acm_lib.projection_name(k)
        if name in projections:
            s = acm_lib.project(s, projections[name]["kernel"])
        elif s.shape[-1] != t.shape[-1]:
            raise ValueError(f"block pair {k}: the student has {s.shape[-1]} channels, the teacher {t.shape[-1]}, "
                             f"and params[{METHOD_PARAMS!r}] holds no {name!r}: initialise the projections "
                             "(acm.init_projections / MixACM.init_params) or pick blocks of equal widths")
        total = total + jnp.mean(acm_lib.acm_distance(s, t, settings.acm))
    return total


def mixacm_loss(apply_fn, params, model_state, batch, key, *, teacher_apply, teacher_variables,
                mixing: Optional[BatchMixing] = None, kd_weight: float = 1.0, temperature: float = 4.0,
                acm_weight: float = 10.0, acm: str = "channel", blocks: Sequence[int] = (-3, -2, -1),
                teacher_blocks: Sequence[int] = ()):
    """MixACM's objective (module docstring) for the student `apply_fn` at `params` (which may hold the
    projections under `state.METHOD_PARAMS`) and the frozen teacher `teacher_apply` at `teacher_variables`.
    `mixing` None trains on the batch as it is; the mixing key is `key` and the student's dropout key
    `fold_in(key, 1)`, as `standard_loss`, so mixing=None and zero weights reproduce it exactly. A block pair of
    different widths needs its projection in the params (`init_projections`), else the loss raises."""
    check_batch(batch)
    settings = MixACMSettings(kd_weight=kd_weight, temperature=temperature, acm_weight=acm_weight, acm=acm,
                              blocks=tuple(blocks), teacher_blocks=tuple(teacher_blocks))
    student_params, projections = split_params(params)
    x, targets = mixed_targets(batch, key, mixing)
    with_taps = bool(acm_weight)
    logits, model_state, s_taps = forward(apply_fn, student_params, model_state, x, train=True,
                                          rng=jax.random.fold_in(key, 1), with_taps=with_taps)
    ce = jnp.mean(cross_entropy(logits, targets))
    loss = ce
    metrics = {"ce_loss": ce, "accuracy": accuracy(logits, targets)}
    if kd_weight or acm_weight:
        frozen = jax.lax.stop_gradient(dict(teacher_variables))
        t_params = frozen.pop("params")
        t_logits, _, t_taps = forward(teacher_apply, t_params, frozen, x, train=False, with_taps=with_taps)
        t_logits, t_taps = jax.lax.stop_gradient((t_logits, t_taps))
        metrics["teacher_accuracy"] = accuracy(t_logits, targets)
        if kd_weight:
            kd = jnp.mean(kd_loss(logits, t_logits, temperature))
            loss = loss + kd_weight * kd
            metrics["kd_loss"] = kd
        if acm_weight:
            acm_term = acm_loss(s_taps, t_taps, projections, settings)
            loss = loss + acm_weight * acm_term
            metrics["acm_loss"] = acm_term
    metrics["loss"] = loss
    return loss, (model_state, metrics)


def init_projections(key, apply_fn, variables, teacher_apply, teacher_variables, x, *, blocks=(-3, -2, -1),
                     teacher_blocks=(), projection: bool = True, acm: str = "channel"):
    """The projections `mixacm_loss` needs for these networks (a dict to put in params[state.METHOD_PARAMS]):
    tap shapes from abstract evaluation on images like `x`, kernels where the paired widths differ."""
    settings = MixACMSettings(blocks=tuple(blocks), teacher_blocks=tuple(teacher_blocks), projection=projection,
                              acm=acm)
    s_blocks, t_blocks = zip(*settings.block_pairs)

    def shapes(fn, v, who, pick_blocks):
        out = jax.eval_shape(lambda v_: fn(v_, x, train=False, mutable=["intermediates"]), v)
        features = acm_lib.taps(out[1].get("intermediates", {}), acm_lib.tap_names(fn))
        return [f.shape for f in acm_lib.pick(features, pick_blocks, who=who)]

    return acm_lib.init_projections(key, shapes(apply_fn, variables, "student", s_blocks),
                                    shapes(teacher_apply, teacher_variables, "teacher", t_blocks),
                                    projection=projection, variant=acm)


def teacher_spec(cfg):
    """(checkpoint, name, kwargs) of `config.method.mixacm.teacher`."""
    t = block_values(cfg.mixacm.teacher, CONFIG["mixacm"]["teacher"])
    return t["checkpoint"], t["name"], t["kwargs"]


class MixACM(Method):
    """The MixACM adapter: the teacher named by `method.mixacm.teacher` is loaded by `models.teacher_io` and handed
    to the loss as frozen variables (`self.frozen['teacher']`), an argument of the jitted step."""

    CONFIG = CONFIG
    loss_fn = staticmethod(mixacm_loss)

    def __init__(self, model, cfg, num_classes: int, teacher=None, image_shape=None):
        """`teacher`: (model, variables), else loaded from `method.mixacm.teacher`; its variables are checked
        against its architecture now with `image_shape`, else when the loss is first traced (batch shape)."""
        super().__init__(model, cfg, num_classes)
        if teacher is None:
            checkpoint, name, kwargs = teacher_spec(cfg)
            teacher = teacher_io.load(checkpoint, num_classes, name, kwargs, image_shape=image_shape)
        self.teacher, variables = teacher
        self.frozen = {"teacher": variables}
        self._checked = set()
        if image_shape is not None:
            self.check_teacher(variables, image_shape)

    def check_teacher(self, variables, image_shape):
        """The strict key/shape check of the teacher's variables on images of `image_shape` (once per shape)."""
        image_shape = tuple(image_shape)
        if image_shape not in self._checked:
            teacher_io.check(self.teacher, variables, image_shape, what="the MixACM teacher's variables")
            self._checked.add(image_shape)

    @staticmethod
    def block_settings(cfg) -> MixACMSettings:
        """`config.method.mixacm` minus the teacher, validated."""
        s = block_values(cfg.mixacm, CONFIG["mixacm"])
        s.pop("teacher")
        return MixACMSettings(**dict(s, blocks=tuple(s["blocks"]), teacher_blocks=tuple(s["teacher_blocks"])))

    @classmethod
    def settings_from_config(cls, cfg, num_classes):
        s = dataclasses.asdict(cls.block_settings(cfg))
        s.pop("projection")  # used where the projections are made (init_params)
        return dict(mixing=mixing_from_config(cfg, num_classes), **s)

    @classmethod
    def init_params(cls, cfg, model, variables, image_shape, num_classes, key):
        s = dataclasses.asdict(cls.block_settings(cfg))
        if not s["acm_weight"]:
            return {}
        checkpoint, name, kwargs = teacher_spec(cfg)
        teacher = teacher_io.build(checkpoint, num_classes, name, kwargs)
        x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
        return init_projections(key, model.apply, variables, teacher.apply, teacher_io.template(teacher, image_shape),
                                x, blocks=s["blocks"], teacher_blocks=s["teacher_blocks"],
                                projection=s["projection"], acm=s["acm"])

    def loss(self, params, model_state, batch, key, step, frozen):
        self.check_teacher(frozen["teacher"], batch["image"].shape[1:])
        return mixacm_loss(self.model.apply, params, model_state, batch, key, teacher_apply=self.teacher.apply,
                           teacher_variables=frozen["teacher"], **self.settings)
