"""The training state and the generic jitted train step that differentiates a method's loss."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

# The key of `TrainState.params` under which a method keeps trainable parameters of its own (MixACM's feature
# projections, `Method.init_params`): trained with the model, never part of the model's variables.
METHOD_PARAMS = "method_params"


def split_params(params):
    """(model parameters, the method's own parameters or {}) of a params tree that may hold `METHOD_PARAMS`."""
    if not isinstance(params, dict) or METHOD_PARAMS not in params:
        return params, {}
    return {k: v for k, v in params.items() if k != METHOD_PARAMS}, params[METHOD_PARAMS]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    model_state: Any  # non-parameter collections, e.g. {'batch_stats': ...}
    opt_state: Any
    ema_params: Any  # {} when EMA is off

    def eval_variables(self, use_ema: bool = True):
        """The model's variables for evaluation and export: EMA parameters when kept (and asked for), else the
        live ones; a method's own parameters (`METHOD_PARAMS`) are left out."""
        params = self.ema_params if (use_ema and self.ema_params) else self.params
        return {"params": split_params(params)[0], **self.model_state}


def create(variables, tx: optax.GradientTransformation, *, ema: bool) -> TrainState:
    variables = dict(variables)
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                      opt_state=tx.init(params), ema_params=jax.tree.map(jnp.copy, params) if ema else {})


def make_train_step(method, tx: optax.GradientTransformation, *, ema_decay: float = 0.0):
    """(state, batch, key, frozen=None) -> (state, metrics). The step's key is `fold_in(key, state.step)`.

    `frozen` is `method.frozen`: variables the objective uses but never trains (DAT's VQGAN, a teacher).
    They are an argument of the jitted step, never closed over: a closed-over array is embedded in the
    compiled program as a constant (a 67M-parameter VQGAN would mean a 0.5 GB program and minutes of
    compilation). A method with frozen variables takes them as the last argument of its `loss`.

    Non-finite guard: if the loss or any gradient is NaN/inf the update is skipped (the state keeps its
    last finite values) and `metrics['nonfinite']` is 1; the training loop stops with an error then.
    """

    def step_fn(state: TrainState, batch, key, frozen=None):
        key = jax.random.fold_in(key, state.step)
        grad_fn = jax.value_and_grad(method.loss, has_aux=True)
        extra = () if frozen is None else (frozen,)
        (loss, (model_state, metrics)), grads = grad_fn(state.params, state.model_state, batch, key, state.step,
                                                        *extra)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # One reduction over the raveled gradients: a reduction per leaf, each feeding the per-leaf selects below,
        # made XLA:CPU compile steps several times slower (VQGAN smoke step 29.5-30.2 s vs 6.1-7.2 s, 165 leaves;
        # benchmarks/README.md, "Compile time and memory").
        finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(ravel_pytree(grads)[0]))
        ema_params = state.ema_params
        if ema_decay:
            ema_params = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema_params, params)
        new = TrainState(step=state.step + 1, params=params, model_state=model_state, opt_state=opt_state,
                         ema_params=ema_params)
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state.replace(step=state.step + 1))
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads), "nonfinite": 1 - finite.astype(jnp.int32)}
        return new, metrics

    return step_fn
