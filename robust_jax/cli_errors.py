"""How `main.py` reports what goes wrong: a mistake the user can fix — a bad or unknown config value, a missing
file, a workdir resumed with another config, a diverging run — as one paragraph on stderr (what, where, how to
fix) with exit status 2, the traceback only with `--verbosity=1`; an unexpected error (a bug) with its full
traceback. Imports nothing heavy, so a missing config file is reported before the config's imports run."""
import os
import re
import sys
import traceback

from absl import flags

FLAGS = flags.FLAGS
USER_ERROR = 2  # exit status of the errors reported as one paragraph
INTERRUPTED = 130  # exit status after Ctrl-C, as shells report a SIGINT
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OWN_CODE = tuple(os.path.join(ROOT, d) + os.sep for d in ("robust_jax", "configs"))


def config_file(argv):
    """The file part of the --config value in `argv` (before any ':arg'), or None without --config."""
    for i, a in enumerate(argv[1:], 1):
        if a.startswith(("--config=", "-config=")):
            return a.split("=", 1)[1].split(":", 1)[0]
        if a in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1].split(":", 1)[0]
    return None


def check_config_file(argv) -> None:
    """Fails at once, before the config's imports, when the --config file does not exist."""
    path = config_file(argv)
    if path is not None and not os.path.isfile(path):
        fail(f"config file not found: {path!r} (--config, relative to {os.getcwd()}). Give the path of a Python "
             "file with get_config(), e.g. --config=configs/default.py or --config=configs/default.py:smoke.")


def _root_cause(e: BaseException) -> BaseException:
    """The innermost exception `e` was raised from or while handling (flag parsing wraps the config file's
    own errors)."""
    seen = {id(e)}
    while True:
        inner = e.__cause__ or e.__context__
        if inner is None or id(inner) in seen:
            return e
        e = inner
        seen.add(id(e))


def _unknown_field(e: BaseException, argv):
    """The readable message of ml_collections' 'no such field' error for a --config.<field> override the user
    typed (an AttributeError around a KeyError whose text is a repr with escaped newlines); None otherwise."""
    inner = e.args[0] if isinstance(e, AttributeError) and e.args else e
    if not isinstance(inner, KeyError) or not inner.args:
        return None
    frames = traceback.extract_tb(inner.__traceback__) + traceback.extract_tb(e.__traceback__)
    if not any("ml_collections" in f.filename for f in frames):
        return None
    key, _, hint = str(inner.args[0]).partition("\n")
    key = key.strip("'\"")
    overrides = [a.split("=", 1)[0][2:] for a in argv if a.startswith("--config.")]
    field = next((o for o in overrides if key in o.split(".")), None)
    if field is None:
        return None
    hint = f" {hint.strip()}" if hint.strip() else ""
    return (f"unknown config field {field}: the config has no field {key!r}.{hint} Configs are locked, so only "
            "the fields of configs/common.py's base() can be set; fix the --config. override.")


def _raised_in_own_code(e: BaseException) -> bool:
    """Whether `e` comes from a `raise` statement of robust_jax or a config file (a check written for users),
    not from inside a library or from a failing expression (a bug, which keeps its traceback)."""
    frames = traceback.extract_tb(e.__traceback__)
    return (bool(frames) and os.path.abspath(frames[-1].filename).startswith(OWN_CODE)
            and (frames[-1].line or "").lstrip().startswith("raise"))


def describe(e: BaseException, argv=()):
    """One paragraph for an error the user can fix, or None for an unexpected one (a bug: full traceback).
    User errors: flag and config-file errors, the project's ValueError/KeyError checks, missing files
    (FileNotFoundError) and the non-finite guard (robust_jax.loop.NonFiniteError)."""
    message = _unknown_field(e, argv)
    if message is not None:
        return message
    if isinstance(e, flags.Error):
        root = _root_cause(e)
        message = _unknown_field(root, argv)
        if message is None and "Error whilst parsing config file" in str(e):  # get_config itself raised
            kind = "" if isinstance(root, (ValueError, OSError)) else f"{type(root).__name__}: "
            # ml_collections loads the file as module 'config_config', the name config files report
            message = f"{kind}{root}".replace("config_config", f"--config={config_file(argv)}")
        return message or f"{str(e).strip().rstrip('.')}. See python main.py --helpshort."
    loop = sys.modules.get("robust_jax.loop")  # imported by then if training ran (and cheap to test without it)
    if isinstance(e, FileNotFoundError) or (loop is not None and isinstance(e, loop.NonFiniteError)):
        return str(e)
    if isinstance(e, (ValueError, KeyError)) and _raised_in_own_code(e):
        return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return None


def verbose(argv) -> bool:
    """Whether --verbosity (or -v) asks for at least 1, which adds the traceback to a reported error."""
    if FLAGS.is_parsed():
        return FLAGS["verbosity"].present and FLAGS.verbosity >= 1
    for a in argv:
        m = re.fullmatch(r"--?(?:verbosity|v)=(-?\d+)", a)
        if m:
            return int(m.group(1)) >= 1
    return False


def fail(message: str, error: BaseException = None) -> None:
    """Prints `message` as one paragraph (the traceback of `error` first with --verbosity=1) and exits 2."""
    if error is not None and verbose(sys.argv):
        traceback.print_exception(error)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USER_ERROR)



def run(app_run) -> None:
    """Runs `app_run()` (absl's app.run of main.py) and reports its errors as this module describes; Ctrl-C
    during training (`robust_jax.loop.TrainingInterrupted`: the state was saved) prints where, exit status 130."""
    check_config_file(sys.argv)
    try:
        app_run()
    except KeyboardInterrupt as interrupt:
        loop = sys.modules.get("robust_jax.loop")
        if loop is None or not isinstance(interrupt, loop.TrainingInterrupted):
            raise
        print(str(interrupt), file=sys.stderr)
        sys.exit(INTERRUPTED)
    except Exception as error:  # noqa: BLE001  (user errors become a paragraph; anything else is re-raised)
        paragraph = describe(error, sys.argv)
        if paragraph is None:
            raise
        fail(paragraph, error)
