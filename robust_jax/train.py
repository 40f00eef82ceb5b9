"""`train_and_evaluate(config, workdir)`: the training loop every method and notebook shares.

It builds the run from the config, resumes from the latest checkpoint in `workdir/checkpoints` if
there is one (the data stream is a function of the step, so an interrupted run continues to the same
result), trains with a progress bar, logs metrics to `metrics.jsonl` and TensorBoard at log steps only,
evaluates periodically, checkpoints, and finally evaluates the configured suite into a report — on the
last state, or with `train.select_best=<metric>` on the state the periodic evaluation scored best
(`robust_jax.best_checkpoint`; the last state is evaluated too before choosing).
"""
from __future__ import annotations

import json

import jax

from robust_jax import builders, compile_options, config_checks, data, evaluate, loop, methods, parallel, run_config
from robust_jax import state as state_lib
from robust_jax.best_checkpoint import BestCheckpoint, read_record, record_path
from robust_jax.checkpoint import Checkpoints
from robust_jax.evaluation import shift_sets
from robust_jax.loop import NonFiniteError  # noqa: F401  (raised by the loop; importable from here)
from robust_jax.metrics_writer import MetricsWriter


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False) -> dict:
    """Trains the classifier of `config` in `workdir` (resuming if possible); returns the final evaluation
    report. (Other trainers, such as VQGAN training, are chosen by `robust_jax.trainers`.)
    The config and the dataset are checked before anything is written (`config_checks`); resuming a workdir
    trained with another config is refused unless `allow_config_change` (`run_config.save_config`)."""
    parallel.initialize_distributed()
    config_checks.validate(config, "train", device_count=jax.device_count())
    config_checks.check_data(config)
    mesh = parallel.make_mesh()
    run, method = build(config, mesh)
    config_checks.check_run_length(run.total_steps, config)
    best = _best_checkpoint(config, workdir)
    run_config.save_config(config, workdir, allow_change=allow_config_change)
    ckpts = Checkpoints(workdir, keep=config.train.keep_checkpoints)
    state = ckpts.restore_or(run.state)
    start = int(state.step)
    writer = MetricsWriter(workdir, resume_step=start, final_step=run.total_steps)
    compile_options.configure(config)  # XLA:CPU's faster conv path unless config.xla_cpu_fast_conv is False
    step_fn = compile_options.jit(state_lib.make_train_step(method, run.tx, ema_decay=config.optim.ema_decay),
                                  donate_argnums=0)
    frozen = parallel.replicate(method.frozen, mesh)
    key = jax.random.key(config.seed + 1)
    batches = data.train_batches(config.data, global_batch_size=config.train.batch_size, mesh=mesh,
                                 seed=config.seed, start_step=start,
                                 normalization=(config.model.mean, config.model.std))
    use_ema = config.eval.use_ema

    def periodic_eval(st):
        results = evaluate.run_suite(run.model, st.eval_variables(use_ema), config, mesh,
                                     suite=config.train.eval_suite, num_examples=config.train.eval_examples,
                                     progress=False)
        if best is not None:
            best.offer(st, results)
        return results

    state = loop.fit(state, step_fn, batches, key=key, frozen=frozen, total_steps=run.total_steps,
                     steps_per_epoch=run.steps_per_epoch, schedule=run.schedule, ckpts=ckpts, writer=writer,
                     log_every=config.train.log_every, checkpoint_every=config.train.checkpoint_every,
                     checkpoint_minutes=config.train.checkpoint_minutes, eval_every=config.train.eval_every,
                     evaluate=periodic_eval)
    source = f"{ckpts.directory} (step {int(state.step)})"
    if best is not None:  # the last state competes too (the loop's periodic evaluation skips the end)
        last = periodic_eval(state)
        writer.write(run.total_steps, {f"eval/{k}": v for k, v in last.items()})
        state = best.restore_weights(state)
        best.close()
        source = (f"{best.directory} (step {int(state.step)}: best periodic {best.metric} "
                  f"{100 * best.record['value']:.2f}%)")
    details = evaluate.run_suite_detailed(run.model, state.eval_variables(use_ema), config, mesh,
                                          suite=config.eval.suite, desc="final eval", num_classes=run.num_classes)
    results = details["accuracy"]
    writer.write(run.total_steps, {f"final/{k}": v for k, v in results.items()})
    writer.close()
    report = evaluate.make_report(config, results, [], source, details)
    if jax.process_index() == 0:
        evaluate.write_report(report, workdir, examples=details["examples"],
                              class_names=shift_sets.class_names(data.source_for(config.data)))
        print(json.dumps({"final": {k: round(100 * v, 2) for k, v in results.items()}}))
    return report


def build(config, mesh) -> tuple[builders.Run, methods.Method]:
    """The run of a classifier config (`builders.build_run`) and its method, whose loss the train step
    differentiates; `robust_jax.trainers.build` returns it for every classifier recipe."""
    run = builders.build_run(config, mesh)
    return run, methods.get(config.method, run.model, run.num_classes, steps_per_epoch=run.steps_per_epoch)


def _best_checkpoint(config, workdir: str):
    """The `BestCheckpoint` for `train.select_best`, or None; a workdir that selected by a metric keeps it."""
    metric = config.train.select_best
    if not metric:
        record = read_record(workdir)
        if record is not None:
            raise ValueError(f"{workdir} keeps a best checkpoint ({record_path(workdir)}): resume it with "
                             f"train.select_best={record['metric']!r}, or use a new workdir")
        return None
    if not config.train.eval_every:
        raise ValueError(f"train.select_best={metric!r} chooses among periodic evaluations: set train.eval_every")
    return BestCheckpoint(workdir, metric)
