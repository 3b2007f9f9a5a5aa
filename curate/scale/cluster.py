"""Starting (or joining) Ray for :class:`~curate.scale.ray_engine.RayEngine`, and keeping Ray's own chatter
off the terminal: the CLI names each step, and the session's log folder under /tmp/ray keeps Ray's full logs."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import psutil

from curate.errors import ConfigError, RetryLaterError

CONNECT_CHECK_S = 5.0  # the TCP connect to a cluster's address before ray.init
JOIN_DEADLINE_S = 60.0  # ray.init joining a cluster (not starting one here): Ray itself retries for many minutes


class _Start:
    """A ray.init under way on its keeper thread (see :func:`_init_on_own_thread`): ``started`` set once it returned;
    ``abandoned`` set when a Ctrl-C ended the wait for it, cleared when an engine claims it (under ``claim``, the
    lock the keeper thread decides under whether to stop the Ray it started); ``kept_none`` set once ``started`` if
    the init failed, or (under ``claim``) when the keeper stopped the Ray it started: no Ray of this process runs."""

    def __init__(self) -> None:
        self.started, self.abandoned, self.claim = threading.Event(), threading.Event(), threading.Lock()
        self.kept_none = threading.Event()


class _Users:
    """The engines of this process using Ray (``count``), under one lock (``lock``): Ray and Ray Data's settings are
    process-wide, so the check-and-init, the settings and the shutdown happen once for all of them (two threads of a
    notebook each running a step on the Ray engine: the first to close stopped Ray under the other's pass)."""

    lock = threading.Lock()
    count = 0
    started_here = False                       # the Ray running was started by an engine of this process
    keeper: threading.Event | None = None      # set: the thread that started that Ray may end (see _init_on_own_thread)
    starting: _Start | None = None             # a ray.init a Ctrl-C left under way on its keeper thread
    restore: Callable[[], None] | None = None  # Ray Data's settings before the first engine's


def start_ray(address: str | None, verbose: bool = False) -> tuple[Any, Callable[[], None]]:
    """``(ray, release)``: Ray initialised, connected to ``address`` or started here; an already initialised Ray is
    reused (started by the user, or by another engine of this process). The first engine's :func:`engine_settings`
    hold until the last engine calls its ``release``, which puts the earlier settings back and stops Ray if an
    engine started it (``release`` does nothing the second time)."""
    import ray

    with _Users.lock:
        if _Users.starting is not None:  # a start a Ctrl-C left under way: used once up, unless already stopped
            start, _Users.starting = _Users.starting, None
            with start.claim:  # (a keeper stopping it holds this until Ray is down)
                start.abandoned.clear()
            try:
                start.started.wait()
            except BaseException:  # a Ctrl-C again: left under way for the next engine to wait for, as at the first
                with start.claim:  # (it found Ray not yet up and called ray.init again: "assert not worker.connected")
                    _Users.starting = start
                    start.abandoned.set()
                raise
            if start.kept_none.is_set():  # that init failed, or its Ray was stopped: one running now is the user's
                _Users.started_here = False  # own (their ray.init since), which the last engine's release leaves be
        if not ray.is_initialized():
            # "local": a new Ray on this machine, never a cluster someone else started here
            kwargs: dict[str, Any] = {"address": address or "local", "log_to_driver": False}
            if address is None:
                kwargs["include_dashboard"] = False
            if not verbose:  # its start-up notices (token authentication, "Started a local Ray instance")
                kwargs["logging_level"] = logging.ERROR
            # a Ray stopped from outside (ray.shutdown() by the user, a test) ended every engine's use of it
            _Users.count, _Users.restore = 0, None
            if address is not None:  # nothing listening there: said at once, not after Ray's minutes of retries
                check_reachable(address)
            if _Users.keeper is not None:  # the thread that kept that Ray ends
                _Users.keeper.set()
            _Users.keeper = _init_on_own_thread(ray, kwargs)
            _Users.started_here = True
        if _Users.count == 0:
            _Users.restore = engine_settings(ray, verbose)
        _Users.count += 1
    released = threading.Event()

    def release() -> None:
        with _Users.lock:
            if released.is_set():
                return
            released.set()
            _Users.count -= 1
            if _Users.count:
                return
            restore, _Users.restore = _Users.restore, None
            if restore is not None:
                restore()
            if _Users.started_here:
                _Users.started_here = False
                ray.shutdown()
                _Users.keeper.set()

    return ray, release


def _init_on_own_thread(ray, kwargs: dict[str, Any]) -> threading.Event:
    """``ray.init(**kwargs)`` on a thread of its own that lives until the returned event is set: the processes Ray
    starts die with the thread that started them (Linux's PR_SET_PDEATHSIG is per thread), so a Ray started by a step
    run on a short-lived thread (a thread pool's, a notebook's worker) was killed as that thread ended, and the
    process with it ("The connection to the plasma store is failed. Terminate the process."). A Ctrl-C during the
    wait for the init leaves it to the thread, which stops that Ray once up unless an engine claims it first."""
    start, keep, failed = _Start(), threading.Event(), []
    here = kwargs["address"] == "local"

    def hold() -> None:
        before = {child.pid for child in psutil.Process().children()} if here else set()
        try:
            with _driver_keeps_its_signal_handlers():
                ray.init(**kwargs)
            try:
                reaper = _reaper(before) if here else None
            except BaseException:  # (_reaper warns of any Exception) a start that fails leaves no Ray running
                ray.shutdown()
                raise
        except BaseException as exc:  # noqa: BLE001  (raised again on the caller's thread)
            failed.append(exc)
            start.kept_none.set()
            return
        finally:
            start.started.set()
        try:
            with start.claim:
                if start.abandoned.is_set():  # see below: no engine claimed it since
                    ray.shutdown()
                    start.kept_none.set()
                    return
            keep.wait()
        finally:  # Ray stopped by this process: nothing for the reaper to do
            if reaper is not None:
                reaper.done()

    threading.Thread(target=hold, name="curate-ray", daemon=True).start()
    joining = kwargs["address"] != "local"
    try:
        if not start.started.wait(JOIN_DEADLINE_S if joining else None):
            # something listens there (check_reachable) but answers no ray.init: Ray retries for many minutes,
            # printing only "Failed to connect to GCS". Given up on; the thread stops that Ray if it ever comes up.
            start.abandoned.set()
            raise ConfigError(f"no Ray cluster answered at {kwargs['address']} within {JOIN_DEADLINE_S:.0f} s: "
                              "something listens there, but not a Ray cluster's GCS (the head's `ray start --head "
                              "--port`, 6379 by default)")
    except ConfigError:
        raise
    except BaseException:
        # Ctrl-C while Ray starts: the init goes on regardless, and its Ray ran for the rest of the process with no
        # engine counting it (the next engine took it for the user's and left it running; or, the init still under
        # way, called ray.init again). The keeper stops it once up, unless an engine claims it first (start_ray).
        start.abandoned.set()
        _Users.keeper, _Users.started_here, _Users.starting = keep, True, start
        raise
    if failed:
        raise failed[0]
    return keep


def _reaper(before: set[int]) -> Any:
    """The reaper of the Ray this process just started (:mod:`curate.scale.reaper`: the processes of a driver killed
    with SIGKILL outlived it by a minute or more); None, with a warning, if it could not start, for whatever reason:
    Ray runs regardless, and the start it belongs to succeeds."""
    from curate.scale.reaper import ray_children, watch

    try:
        return watch(ray_children(before))
    except Exception as exc:  # noqa: BLE001  (warned of: the reaper is a safeguard, not the engine)
        logging.getLogger("curate").warning("no reaper for the Ray started here (%s): if this process is killed, "
                                            "Ray's agents outlive it by a minute or more", exc)
        return None


def check_reachable(address: str) -> None:
    """Raise RetryLaterError (exit 75) when nothing listens at a cluster ``address`` (``host:port`` or
    ``ray://host:port``) and ConfigError (78) when its host name is unknown or it is no address Ray reads (a host without
    its port): ray.init retried such an address for minutes, printing only Ray's "Failed to connect to GCS" lines.
    "auto", "local" and other schemes' addresses (``scheme://...``) are left to Ray."""
    found = re.fullmatch(r"(ray://)?\[?([^\[\]/]+?)\]?:(\d+)", address.strip())
    if found is None:
        if "://" in address or address.strip() in ("auto", "local"):
            return
        # Ray's own "Invalid address format: HOST" came out as exit 1, naming no option and no form
        raise ConfigError(f"Ray cluster address {address!r}: not HOST:PORT (the address `ray start --head` prints, "
                          "e.g. 127.0.0.1:6379), ray://HOST:PORT (Ray Client) or auto")
    client, host, port = found.group(1), found.group(2), int(found.group(3))
    # a ray:// address is the head's Ray Client server (`ray start --head` opens it on 10001), not its GCS port
    command = f"ray start --head --ray-client-server-port={port}" if client else f"ray start --head --port={port}"
    try:
        with socket.create_connection((host, port), timeout=CONNECT_CHECK_S):
            return
    except socket.gaierror as exc:
        raise ConfigError(f"Ray cluster address {address}: no host named {host!r} ({exc.strerror})") from None
    except ConnectionRefusedError:
        raise RetryLaterError(f"no Ray cluster at {address}: nothing listens there (connection refused); start its "
                              f"head there (`{command}`) or give the head's address") from None
    except OSError as exc:  # a timeout, no route to the host
        reason = "no answer" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise RetryLaterError(f"no Ray cluster at {address}: {reason} within {CONNECT_CHECK_S:.0f} s") from None


@contextlib.contextmanager
def _driver_keeps_its_signal_handlers() -> Iterator[None]:
    """A ray.init that leaves this process's signal handlers as they were. Ray's core worker installs Abseil's
    failure signal handler in the driver, SIGTERM included: it printed a C++ stack trace ("*** SIGTERM received
    ... PC: @ clock_nanosleep") before passing the signal on to the CLI's handler, and ray.shutdown() left SIGTERM
    at its default: a SIGTERM after the Ray steps (during the report) killed ``curate run`` with no line and no
    run.json. Ray reads the setting from its constants as the driver's core worker starts (the workers Ray
    starts read their own, and keep their handler); Python's faulthandler (Ray enables it) still reports a crash."""
    from ray._private import ray_constants

    earlier = getattr(ray_constants, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER", False)
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    try:
        yield
    finally:
        ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = earlier


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
