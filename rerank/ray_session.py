"""Ray for one job: join a cluster, reuse the one this process joined, or start one that dies with this process.

`ray_session(address)`:

- ``address`` given (``auto`` or ``HOST:PORT``, the ``--ray-address`` option): join that cluster
  (``ray.init(address=...)``) and leave it afterwards; the cluster itself is not touched.
- Ray already initialised in this process (a notebook, the test suite, a caller's own
  ``ray.init``): use it as it is and leave it running.
- Otherwise start a private cluster on this machine with `EmbeddedCluster`. ``ray.init()`` would
  start Ray's processes in this process's process group, where a terminal's Ctrl-C reaches all of
  them at once (a ``Segmentation fault`` in the driver was seen), and Ray's agents, children of the
  raylet, outlive a SIGKILLed driver for minutes. So a small supervisor process
  (``python -m rerank.ray_session``) in a session of its own starts the cluster and waits on a pipe
  from this process; when the pipe closes (this process is done, or died, even by SIGKILL) it
  terminates every process of the cluster. Ctrl-C reaches only this process, which shuts Ray down
  in order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from typing import Iterator

from cmirm_plugin.errors import CmirmError

#: How long the supervisor lets the cluster's processes exit after SIGTERM before SIGKILL.
GRACE_S = 3.0
#: How long starting the embedded cluster may take.
START_TIMEOUT_S = 180.0


def _quiet_init(**kwargs) -> None:
    import ray

    ray.init(log_to_driver=False, logging_level=logging.WARNING, **kwargs)


def _use_local_token_auth() -> None:
    """Join our own cluster with the token authentication ``ray.init()`` turned on for it.

    Recent Ray starts local clusters with token authentication (the token in ``~/.ray/auth_token``);
    a driver that joins by address must switch it on too, as Ray does for a cluster it finds itself.
    """
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray version without token authentication
        return
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        logger.setLevel(level)


class EmbeddedCluster:
    """A Ray cluster on this machine that lives exactly as long as this process holds it (see the module docstring)."""

    def __init__(self, num_cpus: int, num_gpus: int | None = None) -> None:
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.address: str | None = None
        self._proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()

    def start(self) -> str:
        """Start the supervisor and the cluster; the cluster's GCS address."""
        command = [sys.executable, "-m", "rerank.ray_session", "--num-cpus", str(self.num_cpus)]
        if self.num_gpus is not None:
            command += ["--num-gpus", str(self.num_gpus)]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                      env=env, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._proc.stdout], [], [], left)[0]:
                self.stop()
                raise CmirmError(f"a local Ray cluster did not start within {START_TIMEOUT_S:g} s")
            chunk = os.read(self._proc.stdout.fileno(), 4096)
            if not chunk:
                self._proc.wait(timeout=30)
                raise CmirmError(f"could not start a local Ray cluster: {self._log_tail()}")
            line += chunk
        self.address = json.loads(line)["address"]
        _use_local_token_auth()
        return self.address

    def _log_tail(self) -> str:
        self._log.seek(0)
        lines = [ln for ln in self._log.read().decode(errors="replace").splitlines() if ln.strip()]
        return " / ".join(lines[-3:]) or "no output"

    def stop(self, wait: float = 2 * GRACE_S + 10) -> None:
        """Close the pipe: the supervisor then terminates the cluster (waits up to ``wait`` seconds for it)."""
        if self._proc is None:
            return
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=wait)
        self._proc = None
        self._log.close()

    def __enter__(self) -> "EmbeddedCluster":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: float = 0.0) -> Iterator[None]:
    """Ray for the block (see the module docstring). ``num_cpus``: what the job's actors reserve in all,
    so an embedded cluster offers at least that many (logical) CPUs and actors never wait on each other."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address:
        try:
            _quiet_init(address=address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise CmirmError(f"--ray-address {address}: cannot join the Ray cluster ({exc})") from exc
        try:
            yield
        finally:
            ray.shutdown()
        return
    with EmbeddedCluster(max(os.cpu_count() or 1, math.ceil(num_cpus))) as cluster:
        _quiet_init(address=cluster.address)
        try:
            yield
        finally:
            ray.shutdown()


def _terminate(processes: list, grace: float) -> None:
    """SIGTERM ``processes``, then SIGKILL the ones still alive after ``grace`` seconds."""
    import psutil

    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _supervise(num_cpus: int, num_gpus: int | None) -> None:
    """The supervisor: start the cluster, print its address, wait for the pipe to close, end the cluster."""
    import psutil

    signal.signal(signal.SIGINT, signal.SIG_IGN)       # only the driver ends this process, by closing the pipe
    # address="local": always a new cluster; without it ray.init() joins any `ray start` cluster on the machine.
    _quiet_init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
    import ray

    sys.stdout.write(json.dumps({"address": ray.get_runtime_context().gcs_address}) + "\n")
    sys.stdout.flush()
    while sys.stdin.buffer.read(65536):               # until the driver closes the pipe or dies
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Every process of the cluster descends from this one (raylet, GCS, agents, workers, which Ray puts
    # in process groups of their own), so collect them all before any dies and is reparented.
    _terminate(psutil.Process().children(recursive=True), GRACE_S)
    os._exit(0)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Supervise a private Ray cluster (see rerank.ray_session).")
    parser.add_argument("--num-cpus", type=int, required=True)
    parser.add_argument("--num-gpus", type=int, default=None)
    options = parser.parse_args()
    _supervise(options.num_cpus, options.num_gpus)
