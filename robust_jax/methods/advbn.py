"""AdvBN fine-tuning (Shu et al., NeurIPS 2021): train a dual-BN head on adversarially re-styled features.

For a batch (x, y) and a staged model with dual BatchNorm cut at `method.advbn.cut` (ResNet-50: 1 = after
layer1), as the reference (azshue/AdvBN `train`, `perturb`) runs it:

    f     = front(x)                frozen: eval mode (running BN statistics), no gradient
    s     = argmax over the box [1 - eps, 1 + eps] of CE(head(AdvBN_s(f), bn='adv'), y), found by `steps`
            sign-ascent steps of `step_size` from s = 1 with the WHOLE model in eval mode (the head's adv
            BNs use their running statistics); statistics and factors per group of `group_size` examples
    loss  = CE(head(AdvBN_s(f), bn='adv'), y) + CE(head(f, bn='clean'), y)       both heads in train mode

Each head pass normalises with, and updates, its own BN set (the convs and the classifier are shared). Only
the head's parameters are optimised (`trainable`: the front gets neither updates nor weight decay).
`model.init_from` gives the starting point: the reference starts from torchvision's ResNet-50 with each BN
copied into both sets (robust-jax-convert --dual-bn, or a single-BN training workdir, expanded on load).
`advbn_loss` is the objective as a function of `apply_fn` (the model's `apply`, with `front`/`back` methods
and `bn=`); `AdvBNFineTuning` is its config adapter (`method.name='advbn'`).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from robust_jax.attacks import feature_stats
from robust_jax.attacks.losses import cross_entropy
from robust_jax.checks import check_batch
from robust_jax.methods.base import Classifier, Method, accuracy, block_values
from robust_jax.methods.standard import CONFIG as MIXING_CONFIG
from robust_jax.methods.standard import mixed_targets, mixing_from_config
from robust_jax.mixing import BatchMixing
from robust_jax.models import advbn as advbn_lib

# cut = the stage after which the AdvBN layer sits (1 = after ResNet-50's layer1); group_size = examples per
#   statistics/perturbation group (the reference's per-GPU batch, 64; 0 = the whole batch); clamp = max(., 0)
#   after the layer (post-ReLU features); steps/step_size/eps = the sign-ascent attack on the factors, box
#   [1 - eps, 1 + eps].
CONFIG = dict(MIXING_CONFIG, advbn=dict(cut=1, group_size=64, clamp=True, **feature_stats.DEFAULTS))


def _check_model(model, cut: int):
    if not hasattr(model, "front") or not hasattr(model, "num_cuts"):
        raise ValueError(f"AdvBN needs a staged model with cut points (front/back), got {type(model).__name__}")
    if not getattr(model, "dual_bn", False):
        raise ValueError("AdvBN trains a dual-BN head: build the model with model.kwargs.dual_bn=True")
    if not 0 <= cut < model.num_cuts:
        raise ValueError(f"method.advbn.cut must be in [0, {model.num_cuts - 1}] for {type(model).__name__}, "
                         f"got {cut}")


def front_features(apply_fn, params, model_state, x, *, cut: int):
    """The frozen front's features: eval mode, clean BN, no gradient."""
    f, _ = Classifier(apply_fn)(params, model_state, x, train=False, method="front", cut=cut)
    return jax.lax.stop_gradient(f)


def head_logits(apply_fn, params, model_state, f, *, cut: int, train: bool, bn: str):
    """(logits, model_state) of the head after the cut on features f, with BN set `bn`."""
    return Classifier(apply_fn)(params, model_state, f, train=train, bn=bn, method="back", cut=cut)


def adversarial_features(apply_fn, params, model_state, f, targets, *, cut: int, layer: advbn_lib.AdvBN,
                         steps: int, step_size: float, eps: float):
    """(AdvBN_s(f), s) with s maximising the adv head's loss (model in eval mode; no gradient flows out)."""
    params, model_state = jax.lax.stop_gradient((params, model_state))

    def attack_loss(pert):
        f_adv = layer.apply({advbn_lib.COLLECTION: pert}, f)
        logits, _ = head_logits(apply_fn, params, model_state, f_adv, cut=cut, train=False, bn="adv")
        return jnp.mean(cross_entropy(logits, targets))

    pert0 = advbn_lib.init_perturbation(layer.apply, {}, f)
    pert = feature_stats.maximize(attack_loss, pert0, steps=steps, step_size=step_size, eps=eps)
    return jax.lax.stop_gradient(layer.apply({advbn_lib.COLLECTION: pert}, f)), pert


def advbn_loss(apply_fn, params, model_state, batch, key, *, cut: int = 1, group_size: Optional[int] = 64,
               clamp: bool = True, steps: int = 6, step_size: float = 0.2, eps: float = 1.1,
               mixing: Optional[BatchMixing] = None):
    """CE(head(AdvBN_s(front(x)), bn='adv')) + CE(head(front(x), bn='clean')), front frozen (module doc)."""
    check_batch(batch)
    x, targets = mixed_targets(batch, key, mixing)
    f = front_features(apply_fn, params, model_state, x, cut=cut)
    layer = advbn_lib.AdvBN(group_size=group_size or None, clamp=clamp)
    f_adv, pert = adversarial_features(apply_fn, params, model_state, f, targets, cut=cut, layer=layer, steps=steps,
                                       step_size=step_size, eps=eps)
    adv_logits, model_state = head_logits(apply_fn, params, model_state, f_adv, cut=cut, train=True, bn="adv")
    clean_logits, model_state = head_logits(apply_fn, params, model_state, f, cut=cut, train=True, bn="clean")
    adv_loss = jnp.mean(cross_entropy(adv_logits, targets))
    clean_loss = jnp.mean(cross_entropy(clean_logits, targets))
    loss = adv_loss + clean_loss
    s = jnp.concatenate([v.ravel() for v in jax.tree.leaves(pert)])
    return loss, (model_state, {"loss": loss, "clean_loss": clean_loss, "adv_loss": adv_loss,
                                "accuracy": accuracy(clean_logits, targets),
                                "adv_accuracy": accuracy(adv_logits, targets),
                                "factor_at_bound": jnp.mean(jnp.abs(s - 1.0) >= eps - 1e-6)})


class AdvBNFineTuning(Method):
    """Config adapter of `advbn_loss` (`method.name='advbn'`); trains only the head after the cut."""

    CONFIG = CONFIG
    loss_fn = staticmethod(advbn_loss)

    def __init__(self, model, cfg, num_classes: int):
        _check_model(model, cfg.advbn.cut)
        super().__init__(model, cfg, num_classes)
        self.cut = self.settings["cut"]
        self.layer = advbn_lib.AdvBN(group_size=self.settings["group_size"] or None, clamp=self.settings["clamp"])

    @classmethod
    def settings_from_config(cls, cfg, num_classes):
        return dict(block_values(cfg.advbn, CONFIG["advbn"]), mixing=mixing_from_config(cfg, num_classes))

    def features(self, params, model_state, x):
        return front_features(self.model.apply, params, model_state, x, cut=self.cut)

    def head(self, params, model_state, f, *, train: bool, bn: str):
        return head_logits(self.model.apply, params, model_state, f, cut=self.cut, train=train, bn=bn)

    def adversarial_features(self, params, model_state, f, targets):
        s = self.settings
        return adversarial_features(self.model.apply, params, model_state, f, targets, cut=self.cut, layer=self.layer,
                                    steps=s["steps"], step_size=s["step_size"], eps=s["eps"])

    @classmethod
    def trainable(cls, cfg, model, variables, image_shape):
        """The parameters `back(., cut)` uses (stages after the cut and the classifier), found by
        initialising that method alone (shapes only)."""
        cut = cfg.advbn.cut
        _check_model(model, cut)
        x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
        f = jax.eval_shape(lambda v, x: model.apply(v, x, cut=cut, train=False, method="front"), variables, x)
        head = jax.eval_shape(lambda f: model.init(jax.random.key(0), f, cut=cut, train=False, method="back"),
                              f)["params"]
        paths = {p for p, _ in jax.tree_util.tree_flatten_with_path(head)[0]}
        return jax.tree_util.tree_map_with_path(lambda p, _: p in paths, variables["params"])
