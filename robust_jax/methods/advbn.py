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
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from robust_jax.attacks import feature_stats
from robust_jax.attacks.losses import cross_entropy
from robust_jax.methods.base import accuracy
from robust_jax.methods.standard import Standard
from robust_jax.models import advbn as advbn_lib


def _check_model(model, cut: int):
    if not hasattr(model, "front") or not hasattr(model, "num_cuts"):
        raise ValueError(f"AdvBN needs a staged model with cut points (front/back), got {type(model).__name__}")
    if not getattr(model, "dual_bn", False):
        raise ValueError("AdvBN trains a dual-BN head: build the model with model.kwargs.dual_bn=True")
    if not 0 <= cut < model.num_cuts:
        raise ValueError(f"method.advbn.cut must be in [0, {model.num_cuts - 1}] for {type(model).__name__}, "
                         f"got {cut}")


class AdvBN(Standard):
    def __init__(self, model, cfg, num_classes: int):
        super().__init__(model, cfg, num_classes)
        a = cfg.advbn
        _check_model(model, a.cut)
        self.cut = int(a.cut)
        self.layer = advbn_lib.AdvBN(group_size=a.group_size or None, clamp=a.clamp)

    @classmethod
    def trainable(cls, cfg, model, variables, image_shape):
        """The parameters `back(., cut)` uses (stages after the cut and the classifier), found by
        initialising that method alone (shapes only)."""
        _check_model(model, cfg.advbn.cut)
        x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
        f = jax.eval_shape(lambda v, x: model.apply(v, x, cut=cfg.advbn.cut, train=False, method="front"),
                           variables, x)
        head = jax.eval_shape(lambda f: model.init(jax.random.key(0), f, cut=cfg.advbn.cut, train=False,
                                                   method="back"), f)["params"]
        paths = {p for p, _ in jax.tree_util.tree_flatten_with_path(head)[0]}
        return jax.tree_util.tree_map_with_path(lambda p, _: p in paths, variables["params"])

    def features(self, params, model_state, x):
        """The frozen front's features: eval mode, clean BN, no gradient."""
        f, _ = self.classifier(params, model_state, x, train=False, method="front", cut=self.cut)
        return jax.lax.stop_gradient(f)

    def head(self, params, model_state, f, *, train: bool, bn: str):
        return self.classifier(params, model_state, f, train=train, bn=bn, method="back", cut=self.cut)

    def adversarial_features(self, params, model_state, f, targets):
        """AdvBN_s(f) with s maximising the adv head's loss (model in eval mode; no gradient flows out)."""
        a = self.cfg.advbn
        params, model_state = jax.lax.stop_gradient((params, model_state))

        def attack_loss(pert):
            logits, _ = self.head(params, model_state, self.layer.apply({advbn_lib.COLLECTION: pert}, f),
                                  train=False, bn="adv")
            return jnp.mean(cross_entropy(logits, targets))

        pert0 = advbn_lib.init_perturbation(self.layer.apply, {}, f)
        pert = feature_stats.maximize(attack_loss, pert0, steps=a.steps, step_size=a.step_size, eps=a.eps)
        return jax.lax.stop_gradient(self.layer.apply({advbn_lib.COLLECTION: pert}, f)), pert

    def loss(self, params, model_state, batch, key, step):
        x, targets = self.targets(batch, key)
        f = self.features(params, model_state, x)
        f_adv, pert = self.adversarial_features(params, model_state, f, targets)
        adv_logits, model_state = self.head(params, model_state, f_adv, train=True, bn="adv")
        clean_logits, model_state = self.head(params, model_state, f, train=True, bn="clean")
        adv_loss = jnp.mean(cross_entropy(adv_logits, targets))
        clean_loss = jnp.mean(cross_entropy(clean_logits, targets))
        loss = adv_loss + clean_loss
        s = jnp.concatenate([v.ravel() for v in jax.tree.leaves(pert)])
        return loss, (model_state, {"loss": loss, "clean_loss": clean_loss, "adv_loss": adv_loss,
                                    "accuracy": accuracy(clean_logits, targets),
                                    "adv_accuracy": accuracy(adv_logits, targets),
                                    "factor_at_bound": jnp.mean(jnp.abs(s - 1.0) >= self.cfg.advbn.eps - 1e-6)})
