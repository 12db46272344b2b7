"""Start and stop the reward server: Ray (local or a cluster), Serve's HTTP proxy, the application.

`start_server(config)` returns once every replica has loaded its scorer and answers; `stop()`
deletes the application, and when this process started Ray itself (no ``ray_address`` and no Ray
already running here), shuts Serve and Ray down so nothing keeps running. The command, the tests and
`benchmarks/reward_server.py` all go through here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from cmirm_plugin.errors import CmirmError
from rerank.serve.config import ServeConfig


@dataclass
class RunningServer:
    """A started reward server: its ``url``, its ``config``, and whether this process connected to Ray for it."""

    url: str
    config: ServeConfig
    connected: bool

    def stop(self) -> None:
        """Delete the application (a local Ray this process started: shut Serve down), then disconnect."""
        import ray
        from ray import serve

        if not ray.is_initialized():
            return
        if self.connected and self.config.ray_address is None:
            serve.shutdown()
        else:
            serve.delete(self.config.app_name)
        if self.connected:
            ray.shutdown()


def start_server(config: ServeConfig, *, quiet: bool = False) -> RunningServer:
    """Deploy ``config``'s reward server (see the module docstring); `CmirmError` when it cannot start."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if config.reward.kind == "tiny":   # build the offline tiny model once, here, not in every replica
        from cmirm_plugin.model.tiny import default_tiny_checkpoint

        default_tiny_checkpoint()
    import ray
    from ray import serve

    from rerank.serve.app import build_app

    connect = not ray.is_initialized()
    if connect:
        if config.ray_address is None:
            needed = math.ceil(config.replicas * config.cpus_per_replica)
            # address="local": always a new cluster of our own, never one `ray start` left on this machine
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, needed), include_dashboard=False,
                     log_to_driver=not quiet)
        else:
            ray.init(address=config.ray_address, log_to_driver=not quiet)
    server = RunningServer(config.url, config, connect)
    try:
        serve.start(http_options={"host": config.host, "port": config.port,
                                  "request_timeout_s": config.request_timeout_s})
        serve.run(build_app(config), name=config.app_name, route_prefix="/")
    except BaseException as exc:   # Serve wraps a replica's failure (a bad spec, a busy port) in its own errors
        cause = _failure_cause(config.app_name, exc) if isinstance(exc, Exception) else None
        server.stop()              # an interrupted start (Ctrl-C) leaves nothing running either
        if cause is None:
            raise
        raise CmirmError(f"the reward server for {config.reward.label} did not start: {cause}") from exc
    return server


def _failure_cause(app_name: str, exc: Exception) -> str:
    """The last error line of the failed deployment's status (a replica's traceback), else of ``exc``."""
    from ray import serve

    texts = [str(exc)]
    try:
        app = serve.status().applications.get(app_name)
        texts += [d.message for d in app.deployments.values() if d.message] if app else []
    except Exception:   # Serve itself is down: the exception is all there is
        pass
    lines = [line.strip() for text in texts for line in text.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else repr(exc))
