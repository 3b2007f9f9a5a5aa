"""Starting (or joining) Ray for :class:`~curate.scale.ray_engine.RayEngine`, and keeping Ray's own chatter
off the terminal: the CLI names each step, and the session's log folder under /tmp/ray keeps Ray's full logs."""

from __future__ import annotations

import logging
import warnings
from typing import Any


def start_ray(address: str | None, verbose: bool = False) -> tuple[Any, bool]:
    """``(ray, owns)``: Ray initialised, connected to ``address`` or started here (``owns``: this call
    started it, so its caller shuts it down); an already initialised Ray is reused."""
    import ray

    owns = False
    if not ray.is_initialized():
        # "local": a new Ray on this machine, never a cluster someone else started here
        kwargs: dict[str, Any] = {"address": address or "local", "log_to_driver": False}
        if address is None:
            kwargs["include_dashboard"] = False
        if not verbose:  # its start-up notices (token authentication, "Started a local Ray instance")
            kwargs["logging_level"] = logging.ERROR
        ray.init(**kwargs)
        owns = True
    # a task's or actor's own exception, not Ray Data's UserCodeException wrapped around it: the wrapper's __cause__
    # (the RemoteError naming the file and line) is lost when Ray pickles it back to the driver
    ray.data.DataContext.get_current().raise_original_map_exception = True
    if not verbose:
        quiet_ray_data(ray)
    return ray, owns


def quiet_ray_data(ray) -> None:
    """No Ray Data progress bars, per-dataset log lines or notices about them; ``RayEngine(verbose=True)``
    leaves them on. Ray Data's warnings about the data itself still show."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled. To enable..."
    # a failed task's traceback (100+ lines) before the driver's own one-line error: the exception reaches the
    # driver, which reports it (RayEngine's stage), so these two loggers would only say it twice
    for name in ("ray.data._internal.execution.streaming_executor_state", "ray.data.exceptions"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # a small pool arrives in fewer blocks than there are actors: fine, the actors just idle
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
