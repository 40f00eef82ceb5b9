"""The corruption entries.

`corruptions`: every image of the eval split corrupted on the fly with `robust_jax.corruptions`
(jit-compiled per corruption and severity, on the accelerator; no ImageNet-C download), for the names of
`eval.corruptions.names` ('benchmark' = the 15 of mCE, 'extra' = the 4 held-out, 'all' = 19, or a
comma list) and `eval.corruptions.severities`, with the severity parameters of `eval.corruptions.params`
('auto': CIFAR-10-C's for 32x32 images, else ImageNet-C's; 'imagenet'; 'cifar'). Randomness: batch b,
corruption c, severity s use `fold_in(fold_in(fold_in(key(seed), b), index of c), s)`; `quantize` rounds
to uint8 levels as the ImageNet-C files are. One chunk holds the counts of every corruption and severity (and clean).

`corrupted_tfds`: the same numbers from the prepared TFDS builders `cifar10_corrupted` /
`imagenet2012_corrupted` (configs `<name>_<severity>`), each evaluated clean by `forward_eval`.
"""
from __future__ import annotations

import functools

import jax
import numpy as np
from tqdm.auto import tqdm

from robust_jax import corruptions
from robust_jax.evaluation import chunks

TFDS_BUILDERS = {"cifar10": "cifar10_corrupted", "imagenet2012": "imagenet2012_corrupted"}
PARAMETERS = {
    "imagenet": "ImageNet-C severity parameters (imagecorruptions)",
    "cifar": "CIFAR-10-C severity parameters (make_cifar_c.py; see docs/evaluation.md)",
    "auto": "CIFAR-10-C severity parameters for 32x32 images, ImageNet-C's (imagecorruptions) otherwise",
}
"""Which severity parameters `robust_jax.corruptions` uses (eval.corruptions.params); recorded with every
corruption number."""


def parse_names(spec: str) -> tuple:
    """'benchmark' | 'extra' | 'all' | 'fog,snow' -> the corruption names, checked."""
    groups = {"benchmark": corruptions.BENCHMARK, "extra": corruptions.EXTRA, "all": corruptions.ALL}
    if spec in groups:
        return tuple(groups[spec])
    names = tuple(s.strip() for s in str(spec).split(",") if s.strip())
    unknown = [n for n in names if n not in corruptions.ALL]
    if unknown or not names:
        raise ValueError(f"eval.corruptions.names: unknown corruption(s) {unknown or spec!r}; use 'benchmark', "
                         f"'extra', 'all' or a comma list of: {', '.join(corruptions.ALL)}")
    return names


def settings(cfg_eval) -> dict:
    c = cfg_eval.corruptions
    sev = tuple(int(s) for s in c.severities)
    bad = [s for s in sev if s not in corruptions.SEVERITIES]
    if bad or not sev:
        raise ValueError(f"eval.corruptions.severities must be a non-empty subset of {corruptions.SEVERITIES}, got {sev}")
    params = str(c.get("params", "auto"))
    if params not in corruptions.PARAMS:
        raise ValueError(f"eval.corruptions.params must be one of {', '.join(corruptions.PARAMS)}, got {params!r}")
    return {"names": parse_names(c.names), "severities": sev, "seed": int(c.seed), "quantize": bool(c.quantize),
            "params": params, "parameters": PARAMETERS[params]}


def check_implemented(names) -> None:
    """Fails before any work if a requested corruption has no implementation."""
    missing = []
    for n in names:
        try:
            corruptions.get(n)
        except NotImplementedError:
            missing.append(n)
    if missing:
        raise NotImplementedError(f"corruption(s) not implemented yet: {', '.join(missing)}; evaluate the others "
                                  "with --config.eval.corruptions.names=<comma list>")


@functools.lru_cache(maxsize=256)
def _corrupt_jit(name: str, severity: int, quantize: bool, params: str = "auto"):
    return corruptions.jit(name, severity, quantize=quantize, params=params)


@functools.lru_cache(maxsize=16)
def _forward(model, num_examples: int):
    def fn(variables, x, y, mask):
        pred = jax.numpy.argmax(model.apply(variables, x, train=False), -1)
        return jax.numpy.sum(mask * (pred == y)), pred[:num_examples]
    return jax.jit(fn)


def example_severity(severities) -> int:
    """The severity shown in the example grid: 3 if evaluated, else the highest."""
    return 3 if 3 in severities else max(severities)


def compute_fn(model, variables, s: dict, *, examples_store=None, num_examples: int = 0, progress: bool = True):
    """`compute(chunk, first_batch, batches)` for `chunks.run_chunks`: {'n', 'clean', 'correct': {c: {s: k}}}."""
    check_implemented(s["names"])
    root = jax.random.key(s["seed"])
    fwd = _forward(model, max(num_examples, 1))
    show = example_severity(s["severities"])

    def compute(chunk, first, batches):
        n = clean = 0
        correct = {c: {str(sev): 0 for sev in s["severities"]} for c in s["names"]}
        combos = [(c, sev) for c in s["names"] for sev in s["severities"]]
        bar = tqdm(total=len(batches) * len(combos), desc=f"chunk {chunk}", leave=False, dynamic_ncols=True,
                   disable=not progress or jax.process_index() != 0)
        for j, batch in enumerate(batches):
            b = first + j
            x, y, mask = batch["image"], batch["label"], batch["mask"]
            k, pred = fwd(variables, x, y, mask)
            clean += int(jax.device_get(k))
            n += int(round(float(chunks.host(mask).sum())))
            examples = {} if b == 0 and examples_store is not None and num_examples else None
            if examples is not None:
                examples.update({"labels": chunks.host(y)[:num_examples], "clean:images": chunks.host(x)[:num_examples],
                                 "clean:pred": chunks.host(pred)})
            for c, sev in combos:
                bar.set_postfix_str(f"{c} {sev}")
                key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(root, b),
                                                            corruptions.ALL.index(c)), sev)
                xc = _corrupt_jit(c, sev, s["quantize"], s.get("params", "auto"))(key, x)
                k, pred = fwd(variables, xc, y, mask)
                correct[c][str(sev)] += int(jax.device_get(k))
                if examples is not None and sev == show:
                    examples[f"{c}-{sev}:images"] = chunks.host(xc)[:num_examples]
                    examples[f"{c}-{sev}:pred"] = chunks.host(pred)
                bar.update(1)
            if examples is not None:
                examples_store.save_arrays("examples", examples)
        bar.close()
        return {"n": n, "clean": clean, "correct": correct}

    return compute


def errors(total: dict) -> dict:
    """{corruption: {severity: top-1 error}} from summed chunk counts."""
    n = max(total["n"], 1)
    return {c: {sev: 1 - k / n for sev, k in per.items()} for c, per in total["correct"].items()}


# --- corrupted_tfds -------------------------------------------------------------------------------------
def tfds_builder_name(config) -> str:
    name = config.eval.corruptions.tfds_builder or TFDS_BUILDERS.get(config.data.name)
    if not name:
        raise ValueError(f"corrupted_tfds: no corrupted TFDS builder known for data.name={config.data.name!r} "
                         f"(known: {TFDS_BUILDERS}); set eval.corruptions.tfds_builder")
    return name


def tfds_datasets(config, s: dict) -> list:
    """[(corruption, severity, 'builder/<corruption>_<severity>', split)], checked to be prepared; a missing
    one raises FileNotFoundError with the `tfds build` commands that prepare them."""
    import tensorflow_datasets as tfds

    builder = tfds_builder_name(config)
    data_dir = config.data.data_dir or None
    out, missing = [], []
    for c in s["names"]:
        for sev in s["severities"]:
            full = f"{builder}/{c}_{sev}"
            try:
                b = tfds.builder(full, data_dir=data_dir)
            except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
                raise ValueError(f"corrupted_tfds: TFDS has no dataset {full!r} ({e.__class__.__name__})") from None
            if not b.is_prepared():
                missing.append(full)
                continue
            splits = sorted(b.info.splits)
            out.append((c, sev, full, "test" if "test" in splits else splits[0]))
    if missing:
        flag = f" --data_dir={data_dir}" if data_dir else ""
        cmds = "\n".join(f"  tfds build {m}{flag}" for m in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise FileNotFoundError(
            f"corrupted_tfds: {len(missing)} TFDS dataset(s) not prepared in "
            f"{data_dir or tfds.core.constants.DATA_DIR!r}. Prepare them with:\n{cmds}{more}\n"
            f"(imagenet2012_corrupted needs the ImageNet validation archive in the manual dir; or use the "
            f"on-the-fly `corruptions` entry, which needs no download)")
    return out


def np_errors_table(err: dict, names, severities) -> np.ndarray:
    """[corruption, severity] error matrix (for the heat-map)."""
    return np.array([[err[c][str(s)] for s in severities] for c in names], np.float64)
