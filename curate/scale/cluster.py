"""Starting (or joining) Ray for :class:`~curate.scale.ray_engine.RayEngine`, and keeping Ray's own chatter
off the terminal: the CLI names each step, and the session's log folder under /tmp/ray keeps Ray's full logs."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any


def start_ray(address: str | None, verbose: bool = False) -> tuple[Any, bool, Callable[[], None]]:
    """``(ray, owns, restore)``: Ray initialised, connected to ``address`` or started here (``owns``: this call
    started it, so its caller shuts it down); an already initialised Ray is reused. ``restore`` puts back the Ray
    Data settings the engine changed (see :func:`engine_settings`)."""
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
    return ray, owns, engine_settings(ray, verbose)


def engine_settings(ray, verbose: bool) -> Callable[[], None]:
    """Set what the engine needs of Ray Data, process-wide (its DataContext, its loggers); the callable puts the
    earlier settings back, so a notebook's own Ray Data work after the engine closes is as it was.

    - a task's or actor's own exception, not Ray Data's UserCodeException around it: the wrapper's __cause__ (the
      RemoteError naming the file and line) is lost when Ray pickles it back to the driver;
    - unless ``verbose``: no progress bars, per-dataset log lines or notices about them (Ray Data's warnings about the
      data itself still show), and no failed task's traceback (100+ lines) before the driver's own one-line error."""
    context = ray.data.DataContext.get_current()
    fields: dict[str, Any] = {"raise_original_map_exception": True}
    levels: dict[str, int] = {}
    if not verbose:
        fields.update(enable_progress_bars=False, print_on_execution_start=False)
        levels = {"ray.data": logging.WARNING,
                  "ray.data._internal.progress": logging.ERROR,  # "Progress bars disabled. To enable..."
                  "ray.data._internal.execution.streaming_executor_state": logging.CRITICAL,
                  "ray.data.exceptions": logging.CRITICAL}
        # a small pool arrives in fewer blocks than there are actors: fine, the actors just idle
        warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
    earlier_fields = {name: getattr(context, name) for name in fields}
    earlier_levels = {name: logging.getLogger(name).level for name in levels}
    for name, value in fields.items():
        setattr(context, name, value)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)

    def restore() -> None:
        for name, value in earlier_fields.items():
            setattr(context, name, value)
        for name, level in earlier_levels.items():
            logging.getLogger(name).setLevel(level)

    return restore
