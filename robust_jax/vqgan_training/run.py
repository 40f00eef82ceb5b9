"""`train_vqgan(config, workdir)` and `evaluate_vqgan(config, workdir)`: VQGAN training runs, for configs
with `method.name == 'vqgan'` (configs/vqgan_*.py), which `robust_jax.trainers` (and so `main.py`) hands
over to them.

The loop is the classifiers' (`robust_jax.loop.fit`): resumed from `workdir/checkpoints`, progress bar,
metrics.jsonl/TensorBoard, non-finite guard. The objective is `objective.VQGANObjective`.
"""
from __future__ import annotations

import json

import jax

from robust_jax import builders, compile_options, data, loop, optim, parallel, run_config
from robust_jax import state as state_lib
from robust_jax.checkpoint import Checkpoints
from robust_jax.init_compile import jit_init
from robust_jax.metrics_writer import MetricsWriter
from robust_jax.models import vqgan, vqgan_io
from robust_jax.vqgan_training import report as report_lib
from robust_jax.vqgan_training.objective import VQGANObjective


def build_model(config, image_shape) -> vqgan.VQModel:
    """The configured VQGAN (`vqgan.arch` + `vqgan.arch_kwargs`), with the data's channel count."""
    v = config.vqgan
    kwargs = dict(v.arch_kwargs)
    channels = image_shape[-1]
    kwargs.setdefault("in_channels", channels)
    kwargs.setdefault("out_ch", channels)
    model = vqgan.get(v.arch, **kwargs)
    f = model.downsampling
    if image_shape[0] % f or image_shape[1] % f:
        raise ValueError(f"images of {image_shape[:2]} do not tile into the VQGAN's x{f} downsampling")
    return model


def build(config, mesh) -> tuple[builders.Run, VQGANObjective]:
    """The run of a VQGAN config (model, optimiser, schedule, initial state placed on `mesh`, lengths) and the
    objective its train step differentiates; `robust_jax.trainers.build` returns it for `method.name='vqgan'`."""
    image_shape = data.example_shape(config.data)
    spe = data.steps_per_epoch(config.data, config.train.batch_size)
    total = config.train.num_steps or int(round(config.train.epochs * spe))
    model = build_model(config, image_shape)
    objective = VQGANObjective(model, config.vqgan)
    variables = jit_init(lambda k: objective.init(k, image_shape))(jax.random.key(config.seed))
    schedule = optim.make_schedule(config.optim, steps_per_epoch=spe, total_steps=total)
    tx = optim.make_optimizer(config.optim, schedule, variables["params"])
    state = state_lib.create(variables, tx, ema=bool(config.optim.ema_decay))
    run = builders.Run(model, tx, schedule, parallel.shard_state(state, mesh), num_classes=0,
                       image_shape=image_shape, steps_per_epoch=spe, total_steps=total)
    return run, objective


def _vqgan_variables(state, config):
    return {"params": state.eval_variables(config.eval.use_ema)["params"]["vqgan"]}


def _final_report(model, variables, config, mesh, workdir, source):
    metrics, (images, recs) = report_lib.reconstruction_metrics(model, variables, config, mesh)
    rep = {"method": "vqgan", "variables": source, "metrics": metrics, "vqgan": vqgan_io.model_fields(model),
           "data": {"name": config.data.name, "split": config.eval.split or config.data.eval_split}}
    if jax.process_index() == 0:
        vqgan_io.export(model, variables, workdir)
        report_lib.write(rep, images, recs, workdir, config.vqgan.num_recon_images)
        print(json.dumps({"final": {k: round(v, 4) for k, v in metrics.items()}}))
    return rep


def train_vqgan(config, workdir: str, *, allow_config_change: bool = False) -> dict:
    """Trains the VQGAN of `config` in `workdir` (resuming if possible); writes the files report.py lists.
    Resuming a workdir trained with another config is refused unless `allow_config_change` (`run_config`)."""
    if config.train.select_best:
        raise ValueError("train.select_best is for classifiers; a VQGAN run keeps its last state")
    parallel.initialize_distributed()
    mesh = parallel.make_mesh()
    run, objective = build(config, mesh)
    model, total = run.model, run.total_steps
    ckpts = Checkpoints(workdir, keep=config.train.keep_checkpoints)
    state = ckpts.restore_or(run.state)
    run_config.save_config(config, workdir, allow_change=allow_config_change)
    writer = MetricsWriter(workdir, resume_step=int(state.step), final_step=total)
    compile_options.configure(config)  # XLA:CPU's faster conv path unless config.xla_cpu_fast_conv is False
    step_fn = compile_options.jit(state_lib.make_train_step(objective, run.tx, ema_decay=config.optim.ema_decay),
                                  donate_argnums=0)
    batches = data.train_batches(config.data, global_batch_size=config.train.batch_size, mesh=mesh,
                                 seed=config.seed, start_step=int(state.step))

    def periodic_eval(st):
        metrics, _ = report_lib.reconstruction_metrics(model, _vqgan_variables(st, config), config, mesh,
                                                       num_examples=config.train.eval_examples)
        return {k: v for k, v in metrics.items() if k != "num_examples"}

    frozen = parallel.replicate(objective.frozen, mesh)
    state = loop.fit(state, step_fn, batches, key=jax.random.key(config.seed + 1), frozen=frozen, total_steps=total,
                     steps_per_epoch=run.steps_per_epoch, schedule=run.schedule, ckpts=ckpts, writer=writer,
                     log_every=config.train.log_every, checkpoint_every=config.train.checkpoint_every,
                     checkpoint_minutes=config.train.checkpoint_minutes, eval_every=config.train.eval_every,
                     evaluate=periodic_eval,
                     shown=("rec_loss", "psnr", "code_usage", "d_loss"))
    rep = _final_report(model, _vqgan_variables(state, config), config, mesh, workdir,
                        f"{ckpts.directory} (step {int(state.step)})")
    writer.write(total, {f"final/{k}": v for k, v in rep["metrics"].items()})
    writer.close()
    return rep


def evaluate_vqgan(config, workdir: str) -> dict:
    """Re-writes the reconstruction report (and vqgan.msgpack) from the latest checkpoint in `workdir`."""
    parallel.initialize_distributed()
    mesh = parallel.make_mesh()
    run, _ = build(config, mesh)
    model = run.model
    ckpts = Checkpoints(workdir)
    if ckpts.latest_step() is None:
        raise FileNotFoundError(f"no checkpoint in {ckpts.directory}: train the VQGAN first (--mode train)")
    state = ckpts.restore_weights(run.state)
    ckpts.close()
    return _final_report(model, _vqgan_variables(state, config), config, mesh, workdir,
                         f"{ckpts.directory} (step {int(state.step)})")
