"""What every command shares: absl's app with library noise off and bad input as one line."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable

from vit_jax.errors import UserError

USER_ERROR_EXIT_CODE = 2


def run(main: Callable[[list[str]], None], *, uses_tensorflow: bool = False) -> None:
  """absl.app.run(main) with the project's console conventions:

  - library INFO logs, deprecation warnings and TensorFlow's start-up banners are off by
    default; `--verbosity=0` shows them (absl's own flag);
  - a UserError becomes `error: <message>` on stderr and exit code 2, also when the flags
    or the config file are bad; every other exception keeps its traceback (a bug or
    out-of-memory must stay visible).
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  _skip_an_absent_tpu()
  from absl import app, flags  # pylint: disable=g-import-not-at-top

  def guarded(argv):
    verbose = _verbose()
    if not verbose:
      _quiet_libraries()
    try:
      if uses_tensorflow:
        _import_tensorflow(quiet=not verbose)
      return main(argv)
    except UserError as e:
      _exit_with_error(e)
    except KeyboardInterrupt as e:  # Ctrl-C (twice, in training, which saves on the first).
      _exit_with_error(UserError(str(e) or "interrupted (Ctrl-C)."), code=130)
    except Exception:  # pylint: disable=broad-except
      _report_a_dead_peer()
      raise
  app.run(guarded, flags_parser=_parse_flags)


def _skip_an_absent_tpu() -> None:
  """libtpu installed but no TPU here: JAX is not to try one (see accelerators)."""
  if "JAX_PLATFORMS" in os.environ:
    return
  from vit_jax.runtime import accelerators  # pylint: disable=g-import-not-at-top
  platforms = accelerators.platforms_without_an_absent_tpu()
  if platforms:
    os.environ["JAX_PLATFORMS"] = platforms
    jax = sys.modules.get("jax")  # imported already: its backends start later, at first use.
    if jax is not None:
      jax.config.update("jax_platforms", platforms)


def _report_a_dead_peer() -> None:
  """In a multi-process run a failed collective usually means a peer died: if one did,
  one line naming it (and exit 1) replaces the traceback of the collective."""
  distributed = sys.modules.get("vit_jax.runtime.distributed")  # imported where it started.
  if distributed is not None:
    distributed.on_runtime_failure()


def _quiet_libraries() -> None:
  """Other libraries' INFO logs and warnings off (errors stay); vit_jax's warnings stay."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  def own(record: std_logging.LogRecord) -> bool:
    # Other libraries' records, errors included: orbax, TensorStore, asyncio and gcsfs
    # log each failure they then raise (or that is teardown noise); what matters reaches
    # the user as one line from the exception itself (--verbosity=0 shows them all).
    return "vit_jax" in record.pathname

  logging.set_verbosity(logging.WARNING)
  # gcsfs logs every failed request with its traceback before raising; the raised error
  # becomes one line (vit_jax.storage.describe_error), so its log would only repeat it.
  std_logging.getLogger("gcsfs").setLevel(std_logging.CRITICAL)
  # Grain's input workers pass batches in shared memory; the few in flight when a run
  # ends are unlinked by multiprocessing's resource tracker, which says so in a process of
  # its own at exit. It takes its warning filters from the interpreter's -W options.
  sys.warnoptions.append("ignore:resource_tracker:UserWarning")
  for handler in [logging.get_absl_handler(), *std_logging.getLogger().handlers]:
    handler.addFilter(own)
  # Exceptions in destructors and unawaited tasks at teardown (asyncio event loops closed
  # under aiohttp sessions, TensorStore futures) are printed by this hook: not the user's.
  sys.unraisablehook = lambda unraisable: None
  warnings.filterwarnings("ignore", category=DeprecationWarning)
  # An orbax restore that failed leaves TensorStore reads never awaited: said at exit.
  warnings.filterwarnings("ignore", category=RuntimeWarning, message="coroutine .* never awaited")
  warnings.filterwarnings("ignore", category=FutureWarning)
  warnings.filterwarnings("ignore", category=UserWarning, module="(?!vit_jax)")


def _exit_with_error(error: BaseException, code: int | None = None) -> None:
  """One line: `error: ...` on stderr (exit 2, or the error's own `exit_code`); an exit
  code of 0 (stopped on request, nothing lost) prints the line on stdout instead."""
  code = getattr(error, "exit_code", USER_ERROR_EXIT_CODE) if code is None else code
  sys.stdout.flush()  # what was printed before ends its line before the error's.
  if code == 0:
    sys.stdout.write(f"{error}\n")
  else:
    sys.stderr.write(f"error: {error}\n")
  sys.stdout.flush()
  sys.stderr.flush()
  if getattr(error, "exit_now", False):
    distributed = sys.modules.get("vit_jax.runtime.distributed")
    if distributed is not None:
      distributed.flush_console()
    os._exit(code)  # pylint: disable=protected-access
  sys.exit(code)


def define_shard_and_report(items: str) -> None:
  """--shard and --report, as every command that runs many trainings takes them."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("shard", "0/1", f"K/N: run every N-th {items} from the K-th (N hosts "
                      f"or processes share the work).")
  flags.DEFINE_bool("report", False, "Only rewrite the results of what has finished.")


def define_max_num_patches() -> None:
  """--max_num_patches, as the commands that run a checkpoint on image files take it."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_integer("max_num_patches", None, "NaFlex: images keep their aspect ratio, "
                       "resized to at most this many patches (a NaFlex model's own budget "
                       "changed, or any ViT with a learned position grid).")


def config_file(value: str) -> str:
  """A --config value with its file found: a path as given, else a config shipped with
  the package, by name (`quickstart`, `configs/finetune.py` outside the clone, or
  `vit_jax.configs.finetune`), arguments after ':' kept."""
  path, sep, args = value.partition(":")
  if not path or os.path.exists(path):
    return value
  name = path.removeprefix("vit_jax.configs.").removesuffix(".py").split("/")[-1]
  shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "configs", name + ".py")
  return shipped + sep + args if os.path.exists(shipped) else value


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser; a bad flag, config file or config override is one line."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  argv = [f"--config={config_file(a[len('--config='):])}" if a.startswith("--config=") else a
          for a in argv]
  try:
    rest = flags.FLAGS(argv)
    if "config" in flags.FLAGS and flags.FLAGS["config"].present:
      _ = flags.FLAGS.config.keys()  # a config file that failed to load raises here.
    return rest
  except Exception as e:  # pylint: disable=broad-except  (flag parsing is user input)
    _exit_with_error(UserError(_explain_flag_error(e, argv)))


def _explain_flag_error(error: Exception, argv: list[str]) -> str:
  """ml_collections' chained errors -> one line: the root cause, and for a misspelt
  config field the flag and a 'did you mean'."""
  import re  # pylint: disable=g-import-not-at-top
  if isinstance(error, UserError):
    return str(error)
  text = str(error).strip()
  missing = (re.search(r"(\w+)", text)
             if isinstance(error, (KeyError, AttributeError)) else None)
  if missing:
    field = missing.group(1)
    flag = next((a.split("=")[0] for a in argv if a.startswith("--config.")
                 and re.search(rf"\.{field}(=|$)", a.split("=")[0])), f"--config...{field}")
    suggestion = re.search(r'Did you mean "(\w+)"', text)
    hint = (f"; did you mean {flag.rsplit('.', 1)[0]}.{suggestion.group(1)}?" if suggestion
            else "; see the config file for the fields it has")
    return f"{flag}: the config has no field '{field}'{hint}"
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if "Failed loading config file" in text:
    return f"--config: cannot load the config file ({lines[-1]})"
  if "Error whilst parsing config file" in text and len(lines) > 1:
    # ml_collections puts get_config's traceback in the message; its last line is the
    # reason ('vit_jax.errors.UserError: fine-tuning variant ...').
    kind, _, reason = lines[-1].partition(": ")
    plain = kind.rsplit(".", 1)[-1] in ("UserError", "ValueError")
    return f"--config: {reason if plain and reason else lines[-1]}"
  return lines[0] if lines else type(error).__name__


def _import_tensorflow(*, quiet: bool) -> None:
  """TensorFlow writes banners to the stderr file descriptor before its logging starts;
  importing it once with that descriptor on /dev/null keeps them off the console."""
  with _stderr_to_devnull() if quiet else contextlib.nullcontext():
    import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import


def import_tensorflow() -> None:
  """TensorFlow imported now, its banners kept off the console unless --verbosity=0 (for
  commands that need it only for some of their work, e.g. a SavedModel export)."""
  _import_tensorflow(quiet=not _verbose())


def stderr_quiet():
  """File descriptor 2 on /dev/null for the block, unless --verbosity=0 (C++ libraries'
  own warnings: TensorFlow's banners, libtpu's notes on the TPU VM it is not on)."""
  return contextlib.nullcontext() if _verbose() else _stderr_to_devnull()


def _verbose() -> bool:
  """--verbosity=0 (or more) given: library logs and banners shown."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  return flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity >= 0


@contextlib.contextmanager
def _stderr_to_devnull():
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(devnull)
    os.close(saved)
