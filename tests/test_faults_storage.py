"""Nothing lost, nothing silently wrong on storage: a run of configs/default.py killed (SIGKILL) or stopped
(SIGTERM, SIGINT, even during a save) resumes to the uninterrupted run's numbers with no metric logged twice;
a damaged latest checkpoint falls back to the previous one with one log line, a real mismatch stays a
mismatch, nothing intact is one paragraph; leftover temporary directories are removed; a full disk is one
paragraph naming the path and the free space, found before training when possible."""
import errno
import glob
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import default
from robust_jax import builders, checkpoint, loop, parallel, train
from robust_jax.checkpoint import CheckpointError, Checkpoints
from saved_runs import logged_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRECTORY_LOG = "robust_jax.checkpoint"


def smoke_config(**train_fields):
    """configs/default.py's smoke variant, evaluated on clean accuracy only (fast)."""
    c = default.get_config("smoke")
    c.train.update(**train_fields)
    c.eval.suite = "clean"
    return c


SMALL = dict(num_steps=6, checkpoint_every=3, log_every=1)  # the in-process runs: checkpoints at 3 and 6


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted run of SMALL (its workdir keeps checkpoints 3 and 6) and the state template."""
    workdir = str(tmp_path_factory.mktemp("finished"))
    config = smoke_config(**SMALL)
    report = train.train_and_evaluate(config, workdir)
    template = builders.build_run(config, parallel.make_mesh()).state
    return dict(workdir=workdir, config=config, report=report, template=template)


def _params(workdir, template, step=None):
    ckpts = Checkpoints(workdir)
    state = ckpts.restore(template, step)
    ckpts.close()
    return int(state.step), jax.device_get(state.params)


def _assert_same_params(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def _copy(finished, tmp_path):
    workdir = str(tmp_path / "run")
    shutil.copytree(finished["workdir"], workdir)
    return workdir


def _truncate_arrays(workdir, step):
    """Cuts the array data files of checkpoint `step` to half their size (a copy or a write that stopped)."""
    files = glob.glob(os.path.join(workdir, "checkpoints", str(step), "default", "ocdbt.process_0", "d", "*"))
    assert files
    for f in files:
        os.truncate(f, os.path.getsize(f) // 2)


def _truncate_metadata(workdir, step):
    os.truncate(os.path.join(workdir, "checkpoints", str(step), "default", "_METADATA"), 100)


# --- interruptions --------------------------------------------------------------------------------------

# The smoke recipe as the interrupted runs get it on the command line and the uninterrupted reference in process.
# PGD-2 instead of the recipe's PGD-10 in training: resuming does not depend on the attack's length, and the
# ~100 steps of the three runs and the reference cost a third as much (40 steps: 20 -> 13 CPU-s per process)
RUN_FIELDS = {"train.num_steps": 40, "train.log_every": 1, "train.eval_every": 10, "train.eval_suite": "clean",
              "train.eval_examples": 64, "eval.suite": "clean", "method.attack.steps": 2}
MAIN_ARGS = [f"--config.{field}={value}" for field, value in RUN_FIELDS.items()]


def _main(workdir):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.Popen([sys.executable, os.path.join(ROOT, "main.py"),
                             f"--config={os.path.join(ROOT, 'configs', 'default.py')}:smoke",
                             f"--workdir={workdir}", *MAIN_ARGS],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _last_logged_step(workdir):
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return max([json.loads(line)["step"] for line in f if '"loss"' in line and line.endswith("\n")],
                       default=0)
    except (OSError, ValueError):
        return 0


def _signal_at(workdir, step, signum):
    """Runs main.py on `workdir`, sends `signum` once it logged step `step` (or later), returns (rc, stderr)."""
    proc = _main(workdir)
    deadline = time.time() + 400
    while _last_logged_step(workdir) < step:
        assert proc.poll() is None, f"main.py ended before step {step}: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "main.py too slow"
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def test_sigkill_then_sigterm_then_rerun_of_the_default_recipe_equals_an_uninterrupted_run(tmp_path):
    """The README's promise on configs/default.py: killed at a random step (no chance to save: it resumes
    from the last periodic save), stopped by SIGTERM at a later random step (saves that step, says where),
    then run to the end — same metrics, same evaluation, same parameters as one uninterrupted run."""
    rng = random.Random()
    kill_at, seed = rng.randint(12, 18), rng.random()
    workdir = str(tmp_path / "interrupted")
    rc, err = _signal_at(workdir, kill_at, signal.SIGKILL)
    assert rc == -signal.SIGKILL, err[-2000:]
    reached = _last_logged_step(workdir)
    saved = Checkpoints(workdir).latest_step()
    assert saved is not None and 10 <= saved <= reached < 40, (kill_at, saved, reached)  # at an eval step

    term_at = max(reached + 2, int(22 + 10 * seed))
    rc, err = _signal_at(workdir, term_at, signal.SIGTERM)
    message = err.strip().splitlines()[-1]
    stopped = int(message.split("after step ")[1].split(":")[0])
    assert rc == 1 and message == (
        f"training stopped by SIGTERM after step {stopped}: the state is saved in {workdir}/checkpoints/{stopped}; "
        "run the same command again to resume from there."), err[-2000:]
    assert term_at <= stopped < 40 and Checkpoints(workdir).latest_step() == stopped, (term_at, stopped)

    proc = _main(workdir)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    assert not glob.glob(os.path.join(workdir, "checkpoints", "*orbax-checkpoint-tmp*"))

    config = default.get_config("smoke")
    config.update_from_flattened_dict(RUN_FIELDS)
    reference = str(tmp_path / "uninterrupted")
    report = train.train_and_evaluate(config, reference)
    assert json.loads(out.strip().splitlines()[-1])["final"] == {k: round(100 * v, 2)
                                                                 for k, v in report["accuracy"].items()}
    got, want = logged_metrics(workdir), logged_metrics(reference)
    assert [m["step"] for m in got] == [m["step"] for m in want]  # no step twice, none missing
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        np.testing.assert_allclose([g[k] for k in g], [w[k] for k in w], rtol=1e-5, atol=1e-6)
    template = builders.build_run(config, parallel.make_mesh()).state
    step_a, params_a = _params(workdir, template)
    step_b, params_b = _params(reference, template)
    assert step_a == step_b == 40
    _assert_same_params(params_a, params_b)


class _Clock:
    """A stand-in for `time` in the loop: every reading is 35 s after the previous one."""

    def __init__(self):
        self.now = -35.0

    def monotonic(self):
        self.now += 35.0
        return self.now


def test_checkpoints_by_wall_time_and_at_periodic_evaluations_by_default(tmp_path, monkeypatch):
    """checkpoint_minutes=1 with a clock 35 s per reading: due after steps 2 and 4 (the clock is read at the
    start, each step and after each save); the periodic evaluation at 5 and the end save too."""
    assert default.get_config().train.checkpoint_minutes == 10 and default.get_config().train.eval_every
    monkeypatch.setattr(loop, "time", _Clock())
    saved, real_save = [], Checkpoints.save
    monkeypatch.setattr(Checkpoints, "save", lambda self, state, **kw: saved.append(int(state.step)) or
                        real_save(self, state, **kw))
    config = smoke_config(num_steps=6, checkpoint_every=0, checkpoint_minutes=1, log_every=6, eval_every=5,
                          eval_suite="clean", eval_examples=64)
    train.train_and_evaluate(config, str(tmp_path))
    assert saved == [2, 4, 5, 6]


def _signal_during(monkeypatch, signum, *, at_step, during):
    """Sends `signum` to this process while the loop is inside `during` ('batch': fetching the batch of step
    `at_step`; 'save': saving step `at_step`)."""
    if during == "batch":
        real = train.data.train_batches

        def batches(*args, **kwargs):
            for i, b in enumerate(real(*args, **kwargs)):
                if kwargs["start_step"] + i + 1 == at_step:
                    os.kill(os.getpid(), signum)
                yield b

        monkeypatch.setattr(train.data, "train_batches", batches)
    else:
        real_save = Checkpoints.save

        def save(self, state, **kw):
            if int(state.step) == at_step and self.directory.endswith("checkpoints"):
                os.kill(os.getpid(), signum)
                time.sleep(0.05)  # the handler runs while the save is under way
            return real_save(self, state, **kw)

        monkeypatch.setattr(Checkpoints, "save", save)


@pytest.fixture
def ctrl_c_interrupts():
    """SIGINT raises KeyboardInterrupt during the test, as in an interactive Python, even where the suite was
    started with SIGINT ignored (a background job of a shell script)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_ignored_signal_stays_ignored_while_training():
    previous, term = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.getsignal(signal.SIGTERM)
    try:
        with loop.StopRequests() as stops:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not term  # the signal not ignored is caught
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
        assert stops.received is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is term
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigint_finishes_the_step_saves_it_and_the_rerun_equals_an_uninterrupted_run(tmp_path, monkeypatch,
                                                                                      finished, ctrl_c_interrupts):
    config, workdir = finished["config"], str(tmp_path / "run")
    _signal_during(monkeypatch, signal.SIGINT, at_step=4, during="batch")
    with pytest.raises(KeyboardInterrupt) as stopped:
        train.train_and_evaluate(config, workdir)
    assert isinstance(stopped.value, loop.TrainingInterrupted)
    assert Checkpoints(workdir).latest_step() == 4  # not a checkpoint_every step: the stop saved it
    line = f"training stopped by SIGINT after step 4: the state is saved in {workdir}/checkpoints/4"
    assert str(stopped.value).startswith(line)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers given back
    monkeypatch.undo()
    train.train_and_evaluate(config, workdir)
    _assert_same_params(_params(workdir, finished["template"])[1],
                        _params(finished["workdir"], finished["template"])[1])


def test_sigterm_during_a_save_leaves_a_resumable_workdir(tmp_path, monkeypatch, finished):
    config, workdir = finished["config"], str(tmp_path / "run")
    _signal_during(monkeypatch, signal.SIGTERM, at_step=3, during="save")
    with pytest.raises(SystemExit, match="stopped by SIGTERM after step 4") as stopped:
        train.train_and_evaluate(config, workdir)
    assert isinstance(stopped.value, loop.TrainingTerminated)
    assert Checkpoints(workdir).manager.all_steps() == [3, 4]  # the save under way completed, then step 4's
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    monkeypatch.undo()
    report = train.train_and_evaluate(config, workdir)
    assert report["accuracy"] == finished["report"]["accuracy"]
    _assert_same_params(_params(workdir, finished["template"])[1],
                        _params(finished["workdir"], finished["template"])[1])


def _tensorboard_steps(workdir, tag):
    """The steps TensorBoard shows for `tag`: events read in file order, a SessionLog START at step s (what
    `purge_step` writes) dropping what was logged at steps >= s, as TensorBoard's reader does."""
    from tensorboardX.proto import event_pb2

    steps = []
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.*"))):
        data, i = open(path, "rb").read(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 16 + n
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                steps = [s for s in steps if s < event.step]
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


def test_metrics_have_each_step_once_after_a_resume_and_after_a_rerun_of_a_finished_run(tmp_path, monkeypatch,
                                                                                         finished):
    """The interrupted run logged steps 4 and 5 after its checkpoint at 3; the resumed run logs them again —
    the file and TensorBoard keep them once. Running a finished run again re-evaluates without duplicates."""
    config, workdir = finished["config"], str(tmp_path / "run")
    real = train.data.train_batches

    def dies_at_step_6(*args, **kwargs):
        for i, b in enumerate(real(*args, **kwargs)):
            if i == 5:
                raise RuntimeError("killed")
            yield b

    monkeypatch.setattr(train.data, "train_batches", dies_at_step_6)
    with pytest.raises(RuntimeError):
        train.train_and_evaluate(config, workdir)
    assert [m["step"] for m in logged_metrics(workdir)] == [1, 2, 3, 4, 5] and Checkpoints(workdir).latest_step() == 3
    monkeypatch.undo()
    uninterrupted = [m["step"] for m in logged_metrics(finished["workdir"])]
    for _ in range(2):  # resume, then the finished run once more
        train.train_and_evaluate(config, workdir)
        steps = [m["step"] for m in logged_metrics(workdir)]
        assert steps == uninterrupted and steps == [1, 2, 3, 4, 5, 6, 6]  # the last: final/clean
        assert _tensorboard_steps(workdir, "loss") == [1, 2, 3, 4, 5, 6]


# --- damaged checkpoints --------------------------------------------------------------------------------

def _damage_records(caplog):
    return [r.getMessage() for r in caplog.records if r.name == DIRECTORY_LOG and "damaged" in r.getMessage()]


def test_truncated_array_file_falls_back_to_the_previous_checkpoint_and_training_redoes_it(tmp_path, caplog,
                                                                                           finished):
    workdir = _copy(finished, tmp_path)
    _truncate_arrays(workdir, 6)
    step, params = _params(workdir, finished["template"])
    assert step == 3
    _assert_same_params(params, _params(finished["workdir"], finished["template"], step=3)[1])
    (line,) = _damage_records(caplog)
    assert f"{workdir}/checkpoints/6 is damaged" in line and "arrays cannot be read" in line and "\n" not in line
    train.train_and_evaluate(finished["config"], workdir)  # resumes at 3, saves a new step 6
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "damaged-6"))
    _assert_same_params(_params(workdir, finished["template"])[1],
                        _params(finished["workdir"], finished["template"])[1])


def test_truncated_metadata_falls_back_and_is_not_called_a_config_mismatch(tmp_path, caplog, finished):
    workdir = _copy(finished, tmp_path)
    _truncate_metadata(workdir, 6)
    assert _params(workdir, finished["template"])[0] == 3
    (line,) = _damage_records(caplog)
    assert f"{workdir}/checkpoints/6 is damaged" in line and "metadata cannot be read" in line
    assert "does not match" not in caplog.text


def test_a_real_mismatch_is_reported_as_a_mismatch_even_when_the_arrays_are_damaged(tmp_path, finished):
    workdir = _copy(finished, tmp_path)
    _truncate_arrays(workdir, 6)
    template = finished["template"]
    other = template.replace(params={**template.params, "extra": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"checkpoints/6 does not match the configured model/optimizer .*"
                                         r"missing \['params/extra'\]") as e:
        Checkpoints(workdir).restore(other)
    assert not isinstance(e.value, CheckpointError)


def test_no_intact_checkpoint_is_one_paragraph_naming_the_directory(tmp_path, finished):
    workdir = _copy(finished, tmp_path)
    _truncate_arrays(workdir, 6)
    _truncate_metadata(workdir, 3)
    with pytest.raises(CheckpointError) as e:
        train.train_and_evaluate(finished["config"], workdir)
    message = str(e.value)
    assert message.startswith(f"no intact checkpoint in {workdir}/checkpoints (damaged: 6: its arrays cannot "
                              "be read") and "3: its metadata cannot be read" in message
    assert "\n" not in message and len(message) < 1200 and "new --workdir" in message


def test_leftover_temporary_directory_is_removed_at_start(tmp_path, caplog, finished):
    workdir = _copy(finished, tmp_path)
    tmp = os.path.join(workdir, "checkpoints", "9.orbax-checkpoint-tmp-1234")
    os.makedirs(os.path.join(tmp, "default"))
    open(os.path.join(tmp, "default", "_METADATA"), "w").close()
    assert Checkpoints(workdir).latest_step() == 6  # orbax never counts it...
    train.train_and_evaluate(finished["config"], workdir)
    assert not os.path.exists(tmp)  # ...and the next run removes it, saying so
    assert any(tmp in r.getMessage() and "interrupted save" in r.getMessage() for r in caplog.records)


# --- write failures -------------------------------------------------------------------------------------

def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_fails_before_training_in_one_paragraph(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    monkeypatch.setattr(checkpoint, "_write_probe", _disk_full)
    steps_run = []
    real_fit = loop.fit
    monkeypatch.setattr(loop, "fit", lambda state, step_fn, *a, **k: real_fit(
        state, lambda *s: steps_run.append(1) or step_fn(*s), *a, **k))
    with pytest.raises(CheckpointError) as e:
        train.train_and_evaluate(smoke_config(), workdir)
    message = str(e.value)
    assert message.startswith(f"could not write {workdir}/checkpoints while checking that checkpoints can be "
                              "saved before training (OSError: [Errno 28] No space left on device; ")
    assert " GB free there): the disk is full" in message and "\n" not in message
    assert not steps_run and Checkpoints(workdir).latest_step() is None


def test_a_failed_save_is_one_paragraph_naming_the_step_and_leaves_no_temporary(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    real_save = ocp.CheckpointManager.save

    def fills_the_disk(self, step, *args, **kwargs):
        real_save(self, step, *args, **kwargs)  # writes its temporary directory, then the disk is full
        self.wait_until_finished()
        os.rename(os.path.join(self.directory, str(step)), os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp"))
        _disk_full()

    monkeypatch.setattr(ocp.CheckpointManager, "save", fills_the_disk)
    with pytest.raises(CheckpointError) as e:
        train.train_and_evaluate(smoke_config(num_steps=2, checkpoint_every=1), workdir)
    message = str(e.value)
    assert message.startswith(f"could not write {workdir}/checkpoints/1 while saving the checkpoint of step 1 "
                              "(OSError: [Errno 28] No space left on device; ")
    assert " GB free there)" in message and "\n" not in message and "rerun the same command" in message
    assert not glob.glob(os.path.join(workdir, "checkpoints", "*orbax-checkpoint-tmp*"))

    ckpts = Checkpoints(str(tmp_path / "async"))  # an asynchronous save failing later surfaces the same way
    monkeypatch.setattr(ckpts.manager, "wait_until_finished", _disk_full)
    with pytest.raises(CheckpointError, match="No space left on device; .* GB free there"):
        ckpts.close()
