"""Which BatchNorm set evaluation uses on a dual-BN model (AdvBN, AdvProp): `eval.bn` and per shift set `bn`.

AdvBN's reference picks the branch per test set: the clean BNs for ImageNet, ImageNet-C and Instagram, the
adversarial ones for Stylized-ImageNet and ImageNet-Sketch. Every evaluator calls `model.apply(variables, x,
train=False)`; `view(model, bn)` is the model with `bn` fixed, and `label` is what reports print next to each
number ('clean' / 'adv', or '-' for models with one BN set).
"""
from __future__ import annotations

import dataclasses

BRANCHES = ("clean", "adv")


def is_dual(model) -> bool:
    return bool(getattr(model, "dual_bn", False))


def check(model, bn: str, *, where: str = "eval.bn") -> None:
    if bn not in BRANCHES:
        raise ValueError(f"{where} must be one of {BRANCHES}, got {bn!r}")
    if bn == "adv" and not is_dual(model):
        raise ValueError(f"{where}='adv' needs a model with dual BatchNorm (model.kwargs.dual_bn=True); "
                         f"{type(model).__name__} has one BN set")


def label(model, bn: str) -> str:
    """The branch as reports print it: 'clean'/'adv' for dual-BN models, '-' otherwise."""
    return bn if is_dual(model) else "-"


@dataclasses.dataclass(frozen=True)
class BranchView:
    """`model` whose `apply` always runs BatchNorm set `bn`; other attributes are the model's."""

    model: object
    bn: str

    def apply(self, variables, *args, **kwargs):
        return self.model.apply(variables, *args, bn=self.bn, **kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def view(model, bn: str, *, where: str = "eval.bn"):
    """`model` evaluated with BN set `bn` (the model itself for 'clean', which is every model's default)."""
    check(model, bn, where=where)
    return model if bn == "clean" else BranchView(model, bn)
