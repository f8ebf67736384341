"""Every path a user gives may be local or in a bucket (`gs://`, `s3://`, ...): one I/O
layer for all of them, `etils.epath`, the one orbax and TFDS use.

- `path(p)`: an `epath.Path` (`~` expanded for local paths);
- `is_remote(p)`, `check_reachable(p)` / `check_writable(p)`: one `UserError` line naming
  the path and the fix (missing client library, missing bucket, no permission, no
  connection), before any heavy work;
- `read_bytes` / `write_bytes` (a whole object at once: buckets cannot append; locally
  via a temporary file, so a reader never sees half a file), `local_copy` (a cached
  local copy for readers that only take local files).

Nothing here imports TensorFlow: epath would use TensorFlow's gfile for bucket paths when
TensorFlow is installed; `EPATH_USE_TF=false` makes it use fsspec (gcsfs) instead.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from typing import Union

os.environ.setdefault("EPATH_USE_TF", "false")  # before epath decides on a backend.


def _no_listing_cache() -> None:
  """Bucket listings are read fresh: fsspec keeps a listing forever by default, and
  orbax's arrays are written through TensorStore, which that cache never hears of, so a
  cached listing would miss checkpoints written since (by this or another process)."""
  import fsspec.config  # pylint: disable=g-import-not-at-top
  for protocol in ("gs", "gcs", "s3", "az"):
    fsspec.config.conf.setdefault(protocol, {})["use_listings_cache"] = False


_no_listing_cache()

from etils import epath  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from vit_jax.errors import UserError, first_line  # noqa: E402  pylint: disable=wrong-import-position

PathLike = Union[str, os.PathLike]
# scheme -> (the module its fsspec backend needs, the extra that installs it)
_CLIENTS = {"gs": ("gcsfs", "gcs"), "s3": ("s3fs", None), "az": ("adlfs", None)}


def scheme(p: PathLike) -> str:
  """'gs' for 'gs://bucket/x', '' for a local path."""
  text = os.fspath(p)
  return text.split("://", 1)[0] if "://" in text else ""


def is_remote(p: PathLike) -> bool:
  return bool(scheme(p))


def path(p: PathLike) -> epath.Path:
  """The epath of a user's path: a bucket URI as it is, a local path with `~` expanded."""
  if isinstance(p, epath.Path):
    return p
  text = os.fspath(p)
  if not is_remote(text):
    text = os.path.abspath(os.path.expanduser(text))
  else:
    check_client(text)
  return epath.Path(text)


def check_client(p: PathLike) -> None:
  """The fsspec client library a bucket path needs is installed, or one line saying how."""
  kind = scheme(p)
  if not kind:
    return
  if kind not in _CLIENTS and kind != "hf":
    raise UserError(f"{os.fspath(p)}: '{kind}://' paths are not supported; use a local path "
                    f"or gs://, s3://, az://.")
  module, extra = _CLIENTS.get(kind, (None, None))
  if module is None:
    return
  import importlib.util  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec(module) is None:
    how = f"pip install 'vit_jax[{extra}]'" if extra else f"pip install {module}"
    raise UserError(f"{os.fspath(p)} is a {kind}:// path, which needs the {module} client "
                    f"library: {how}")


def describe_error(p: PathLike, error: BaseException) -> str:
  """A storage error as the cause a user can act on."""
  text = first_line(error)
  lowered = text.lower()
  bucket = os.fspath(p).split("://", 1)[-1].split("/", 1)[0]
  if (isinstance(error, FileNotFoundError) or "404" in text or "not found" in lowered
      or "nosuchbucket" in lowered):
    return f"the bucket {bucket!r} does not exist (create it: gcloud storage buckets create gs://{bucket})"
  if (isinstance(error, PermissionError) or "403" in text or "401" in text
      or "forbidden" in lowered or "permission" in lowered):
    return (f"no permission to write in {bucket!r} ({text}); grant this machine's service "
            f"account Storage Object Admin on it")
  if any(w in lowered for w in ("connect", "timeout", "timed out", "resolve", "unreachable")):
    return f"cannot reach the storage service ({text}); check the network and credentials"
  return text


def check_writable(directory: PathLike, *, what: str = "--workdir") -> epath.Path:
  """`directory` exists or can be created, and an object can be written and deleted there;
  else one UserError line with the cause. Returns its epath."""
  target = path(directory)
  if not is_remote(target):
    return _check_local_writable(target, what)
  probe = target / f".vit_jax_write_test_{os.getpid()}_{os.urandom(4).hex()}"
  try:
    probe.write_bytes(b"")
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except  (fsspec/HTTP errors of any kind)
    raise UserError(f"{what}={directory}: cannot write there: {describe_error(target, e)}.") \
        from None
  return target


def _check_local_writable(target: epath.Path, what: str) -> epath.Path:
  existing = os.fspath(target)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing) or (existing == os.fspath(target) and not target.is_dir()):
    raise UserError(f"{what}={target}: {existing} is not a directory.")
  probe = os.path.join(existing, f".vit_jax_write_test_{os.getpid()}")
  try:
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise UserError(f"{what}={target}: cannot write in {existing} ({e.strerror}); choose a "
                    f"writable directory.") from None
  return target


def check_reachable(p: PathLike, *, what: str) -> epath.Path:
  """`p` exists (a bucket path is looked up), or one UserError line."""
  target = path(p)
  try:
    exists = target.exists()
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"{what}={p}: {describe_error(target, e)}.") from None
  if not exists:
    raise UserError(f"{what}={p!r}: no such file or directory.")
  return target


def free_bytes(p: PathLike):
  """Free bytes on the local file system holding `p` (None for a bucket)."""
  if is_remote(p):
    return None
  existing = os.fspath(path(p))
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  import shutil  # pylint: disable=g-import-not-at-top
  return shutil.disk_usage(existing).free


def read_bytes(p: PathLike) -> bytes:
  """A whole file (local: read directly, the input workers' fast path)."""
  if not is_remote(p):
    with open(os.path.expanduser(os.fspath(p)), "rb") as f:
      return f.read()
  return path(p).read_bytes()


def write_bytes(p: PathLike, data: bytes) -> None:
  """The whole file at once: an object upload, or locally a temporary file renamed into
  place, so that no reader ever sees part of it."""
  target = path(p)
  if is_remote(target):
    target.write_bytes(data)
    return
  target.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.fspath(target.parent), prefix=f".{target.name}.")
  try:
    # mkstemp makes 0600 files; a written file gets the mode open() would give it (the
    # umask's), so colleagues and a TensorBoard server under another user can read it.
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.replace(tmp, os.fspath(target))
  except OSError as e:  # disk full, read-only: nothing half-written is left behind.
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise UserError(f"Cannot write {target} ({e.strerror or e}); free some space or fix "
                    f"its permissions.") from None


def _umask() -> int:
  """The process's umask, read without changing it where Linux says it (os.umask can
  only be read by setting it, which races with other threads creating files)."""
  with contextlib.suppress(OSError, ValueError):
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def write_text(p: PathLike, text: str) -> None:
  write_bytes(p, text.encode("utf-8"))


def cache_dir() -> epath.Path:
  """Where bucket files are copied for readers that need local files."""
  root = os.environ.get("VIT_JAX_CACHE", os.path.join("~", ".cache", "vit_jax"))
  return epath.Path(os.path.expanduser(root))


def local_copy(p: PathLike) -> str:
  """A local path holding `p`'s bytes: `p` itself when local, else a copy in the cache
  (kept, keyed by the URI and the object's size: copied once per machine)."""
  target = path(p)
  if not is_remote(target):
    return os.fspath(target)
  size = target.stat().length
  key = hashlib.sha256(f"{target}|{size}".encode()).hexdigest()[:16]
  local = cache_dir() / "objects" / f"{key}_{target.name}"
  if not local.exists():
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.parent / f".{local.name}.{os.getpid()}.tmp"
    tmp.write_bytes(target.read_bytes())
    os.replace(os.fspath(tmp), os.fspath(local))
  return os.fspath(local)


def move(src: PathLike, dst: PathLike) -> None:
  """Renames a file or folder (in a bucket: copies every object, then deletes them)."""
  src, dst = path(src), path(dst)
  if not is_remote(src):
    os.rename(os.fspath(src), os.fspath(dst))
    return
  import fsspec  # pylint: disable=g-import-not-at-top  (epath's own bucket backend)
  fsspec.filesystem(scheme(src)).mv(os.fspath(src), os.fspath(dst), recursive=True)


def mirror(remote_dir: PathLike, select=lambda name: True) -> str:
  """A local copy of the files of `remote_dir` whose names `select` accepts (not its
  sub-folders), in the cache, for readers that only take local files (ArrayRecord).
  Files already copied (same size) are not copied again; returns the local folder."""
  remote = path(remote_dir)
  key = hashlib.sha256(os.fspath(remote).encode()).hexdigest()[:16]
  local = cache_dir() / "mirrors" / key
  local.mkdir(parents=True, exist_ok=True)
  wanted = [p for p in remote.iterdir() if select(p.name) and not p.is_dir()]
  for source in wanted:
    target = local / source.name
    if target.exists() and target.stat().length == source.stat().length:
      continue
    tmp = local / f".{source.name}.{os.getpid()}.tmp"
    tmp.write_bytes(source.read_bytes())
    os.replace(os.fspath(tmp), os.fspath(target))
  return os.fspath(local)


def copy_tree(src: PathLike, dst: PathLike) -> int:
  """Copies every file under `src` to the same place under `dst` (either may be a
  bucket); returns the number of files."""
  src, dst = path(src), path(dst)
  root = os.fspath(src).split("://", 1)[-1].rstrip("/")  # walk() gives paths sans scheme.
  count = 0
  for directory, _, files in src.walk():
    relative = os.fspath(directory).split("://", 1)[-1][len(root):].strip("/")
    for name in files:
      source = src / relative / name if relative else src / name
      write_bytes(dst / relative / name if relative else dst / name, read_bytes(source))
      count += 1
  return count
