"""Distribution-shift sets (`eval.shift_sets`): {label: spec}, evaluated clean with the model's preprocessing.

A spec is a source string (`imagefolder:PATH`, a TFDS name such as `imagenet_r`, `npz:PATH`) or a dict:

    source    the source (required)
    split     its split (default 'test'; an ImageFolder's splits are the sub-folders of PATH, so the
              unpacked `imagenet-r/` inside PATH is split 'imagenet-r')
    labels    how the set's labels map to the model's classes:
              'identity' (default) the set's label k is model class k (TFDS imagenet_r/_a/_sketch/_v2,
                         which already use the 1000 ImageNet labels; Stylized-ImageNet as an ImageFolder
                         of wnid folders of all 1000 classes, since sorted wnids = ImageNet order);
              'wnid'     the set's class names are WordNet ids (ImageNet-R/-A folders): mapped to their
                         index in the sorted list of the 1000 ImageNet wnids (`eval.wnids_file`; default
                         TFDS's bundled ImageNet label file, so no download is needed);
              'index'    the class names are integers (ImageNet-V2's folders '0'..'999'), mapped to int(name)
                         (ImageFolder sorts them as strings, '10' before '2', so identity would be wrong).
    mask      'none' (default; plain top-1 over all classes: Sketch, V2, Stylized) or 'present': the
              prediction is the argmax over the classes the set contains only (ImageNet-R/-A: 200 classes;
              from the class names of an ImageFolder, from a scan of the labels otherwise).
    preprocess, image_size   override `data.eval_preprocess` / `data.image_size` for this set.
    splits    instead of `split`: a comma-separated list of splits, or '*' for all of the source's; the set's
              accuracy is the mean of their accuracies, each recorded (ImageNet-Instagram: the mean top-1
              over its 20 filter folders, `imagefolder:PATH` with PATH/<filter>/<class>/<image>).
    bn        the BatchNorm set of a dual-BN model for this set, 'clean' or 'adv' (default: `eval.bn`;
              AdvBN's reference: 'adv' for Stylized-ImageNet and ImageNet-Sketch).

Every number is reported with the preprocessing and image size it was computed with.
"""
from __future__ import annotations

import os
import re
from typing import Optional

import ml_collections
import numpy as np

SPEC_KEYS = ("source", "split", "splits", "labels", "mask", "preprocess", "image_size", "bn")
LABEL_MODES = ("identity", "wnid", "index")
MASK_MODES = ("none", "present")
_WNID = re.compile(r"n\d{8}")


def parse_spec(label: str, spec) -> dict:
    """A shift-set spec (string or mapping) -> a dict with every key of SPEC_KEYS."""
    if isinstance(spec, str):
        spec = {"source": spec}
    elif isinstance(spec, ml_collections.ConfigDict):
        spec = spec.to_dict()
    elif not isinstance(spec, dict):
        raise ValueError(f"eval.shift_sets.{label}: expected a source string or a dict, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"eval.shift_sets.{label}: unknown key(s) {unknown}; known: {SPEC_KEYS}")
    if spec.get("split") and spec.get("splits"):
        raise ValueError(f"eval.shift_sets.{label}: give 'split' or 'splits', not both")
    if not spec.get("source"):
        raise ValueError(f"eval.shift_sets.{label}: 'source' is required (imagefolder:PATH or a TFDS name)")
    out = {"source": spec["source"], "split": spec.get("split") or "test", "labels": spec.get("labels") or "identity",
           "mask": spec.get("mask") or "none", "preprocess": spec.get("preprocess") or None,
           "image_size": spec.get("image_size") or None, "bn": spec.get("bn") or None,
           "splits": spec.get("splits") or None}
    if out["labels"] not in LABEL_MODES:
        raise ValueError(f"eval.shift_sets.{label}.labels must be one of {LABEL_MODES}, got {out['labels']!r}")
    if out["mask"] not in MASK_MODES:
        raise ValueError(f"eval.shift_sets.{label}.mask must be one of {MASK_MODES}, got {out['mask']!r}")
    return out


def resolve_splits(spec: dict, available) -> list:
    """The splits a set is evaluated on: [spec['split']], or those `splits` names ('*' = all available)."""
    if not spec["splits"]:
        return [spec["split"]]
    if spec["splits"] == "*":
        return sorted(available)
    wanted = [s.strip() for s in str(spec["splits"]).split(",") if s.strip()]
    missing = [s for s in wanted if s not in available]
    if missing:
        raise ValueError(f"{spec['source']!r} has no split(s) {missing}; splits: {sorted(available)}")
    return wanted


def parse(shift_sets) -> dict:
    """`eval.shift_sets` -> {label: spec dict}, in the configured order."""
    items = shift_sets.items() if shift_sets else []
    out = {}
    for label, spec in items:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", str(label)):
            raise ValueError(f"eval.shift_sets: label {label!r} must be letters, digits, '_', '-', '.'")
        out[str(label)] = parse_spec(str(label), spec)
    return out


def default_wnids_file() -> str:
    """TFDS's bundled list of the 1000 ImageNet-1k WordNet ids, in label order (sorted)."""
    import tensorflow_datasets as tfds

    path = os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", "labels.txt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"TFDS's ImageNet label file is not at {path!r}; set eval.wnids_file to a file "
                                "with the 1000 ImageNet wnids, one per line, in class order")
    return path


def read_wnids(path: Optional[str] = None) -> list:
    path = path or default_wnids_file()
    if not os.path.exists(path):
        raise FileNotFoundError(f"eval.wnids_file not found: {path!r}")
    with open(path) as f:
        wnids = [line.strip() for line in f if line.strip()]
    bad = [w for w in wnids if not _WNID.fullmatch(w)]
    if bad or len(set(wnids)) != len(wnids):
        raise ValueError(f"{path!r} must list distinct WordNet ids (n########), one per line; bad: {bad[:3]}")
    return wnids


def label_map(names, mode: str, *, num_classes: int, wnids=None) -> np.ndarray:
    """int32 [len(names)]: the model class of each of the set's classes (`names` in label order)."""
    if mode == "identity":
        idx = np.arange(len(names))
    elif mode == "wnid":
        if wnids is None:
            raise ValueError("labels='wnid' needs the list of ImageNet wnids")
        pos = {w: i for i, w in enumerate(wnids)}
        unknown = [n for n in names if n not in pos]
        if unknown:
            raise ValueError(f"labels='wnid': class folder(s) {unknown[:5]} are not ImageNet wnids of the wnid list")
        idx = np.array([pos[n] for n in names])
    elif mode == "index":
        bad = [n for n in names if not str(n).isdigit()]
        if bad:
            raise ValueError(f"labels='index': class names {bad[:5]} are not integers")
        idx = np.array([int(n) for n in names])
    else:
        raise ValueError(f"unknown label mode {mode!r}; known: {LABEL_MODES}")
    if len(idx) and idx.max() >= num_classes:
        raise ValueError(f"the set's labels map to class {int(idx.max())} but the model has {num_classes} classes")
    return idx.astype(np.int32)


def class_mask(present_model_classes, num_classes: int) -> np.ndarray:
    """bool [num_classes], True for the given model classes."""
    mask = np.zeros(num_classes, bool)
    mask[np.asarray(list(present_model_classes), int)] = True
    return mask


def class_names(src) -> Optional[list]:
    """The source's class names in label order (TFDS / ImageFolder), None for array sources."""
    builder = getattr(src, "builder", None)
    if builder is None:
        return None
    return list(builder.info.features["label"].names)


def present_labels(src, split: str) -> np.ndarray:
    """The distinct labels of a split: all classes of an ImageFolder with a single split (one folder per
    class), else a scan of the labels (images are not decoded). An ImageFolder's class list is the union
    over its splits, so with several splits (e.g. imagenet-r and imagenet-a side by side) it is scanned."""
    import tensorflow_datasets as tfds

    from robust_jax.data.tf_runtime import without_autograph

    builder = getattr(src, "builder", None)
    if isinstance(builder, tfds.folder_dataset.ImageFolder) and len(builder.info.splits) == 1:
        return np.arange(src.num_classes)
    labels = src.split(split).encoded.map(without_autograph(lambda ex: ex["label"])).batch(4096)
    return np.unique(np.concatenate([np.asarray(b) for b in labels.as_numpy_iterator()] or [np.zeros(0, int)]))
