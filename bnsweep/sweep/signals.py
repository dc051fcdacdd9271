"""SIGTERM and SIGHUP stop a sweep as Ctrl-C (SIGINT) does.

SLURM sends SIGTERM at a time limit or on preemption, Kubernetes on eviction, `kill` by default; a
closing terminal sends SIGHUP. Unhandled, SIGTERM meets the C++ failure handler that `ray.init`
installs in the driver (a stack dump, exit 134) and, sent to the process group as SLURM and a
terminal do, kills the local Ray's own processes at once, so result lines the trials reported can be
lost. Here the driver handles both signals as Ray Tune handles SIGINT: Tune stops the trials and
saves the experiment, `fit` returns, the stage is not recorded as finished, and the command line
prints the `bnsweep resume DIR` command and exits 128 + the signal (143, 129). The local Ray's
processes are started with both signals blocked (a blocked signal stays blocked across fork and
exec), so a signal to the whole group leaves them running until the driver has saved its state and
shuts them down (with SIGKILL at once, `stop_ray_at_once`); Ray already starts them with SIGINT
blocked for Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop signal outside Ray Tune's loop (or a second one inside it): stop at once, as a second
    Ctrl-C does."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """While active (a context manager, main thread only), SIGTERM and SIGHUP call whatever handles
    SIGINT: Ray Tune's graceful stop during `fit`, else `Stopped` is raised (SIGINT itself raises
    KeyboardInterrupt outside `fit`). `received` is the last stop signal, for the exit status."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._saved = {sig: signal.getsignal(sig) for sig in (*STOP_SIGNALS, signal.SIGINT)}
            self._install()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _handle(self, signum: int, frame) -> None:
        self.received = signum
        on_int = signal.getsignal(signal.SIGINT)
        if callable(on_int) and on_int is not signal.default_int_handler:
            on_int(signal.SIGINT, frame)  # Ray Tune's: stop the trials, save the experiment, return from fit
        else:
            raise Stopped(signum)

    def after_fit(self) -> None:
        """Give SIGINT Python's handler (KeyboardInterrupt) again: Ray Tune leaves its own installed
        after `fit` returns, where it would swallow a Ctrl-C (and these signals) between two stages."""
        if self._saved:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    @contextlib.contextmanager
    def starting_ray(self) -> Iterator[None]:
        """Around `ray.init`: the processes of a local Ray started here inherit SIGTERM and SIGHUP
        blocked; afterwards this driver's handlers are installed again (ray.init replaces them with
        its own) before the signals are unblocked, so one that came meanwhile is handled here."""
        if not self._saved:
            yield
            return
        before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            yield
        finally:
            self._install()
            signal.pthread_sigmask(signal.SIG_SETMASK, before)
        atexit.unregister(stop_ray_at_once)  # once, however many sweeps this process runs
        atexit.register(stop_ray_at_once)  # after Ray's own exit hook, so it runs first


def stop_ray_at_once() -> None:
    """Shut down the local Ray started here with SIGKILL right away. Ray's own shutdown sends each
    of its processes SIGTERM and gives it a second before SIGKILL; with SIGTERM blocked every second
    passes for nothing (about 5 s at each exit) and ends the same way. The raylet's children (trial
    workers, Ray's agents) go first: an agent outliving the raylet waits for the GCS to log its
    death, for a minute once the GCS is gone. Ray gives its node no public handle, so this wraps the
    private one's `kill_all_processes`; a Ray without it, or joined rather than started here (no
    raylet of its own), gets Ray's plain shutdown."""
    import psutil  # a dependency of Ray's
    import ray
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    kill = getattr(node, "kill_all_processes", None)
    raylets = getattr(node, "all_processes", {}).get("raylet", [])
    if callable(kill) and raylets:
        try:
            children = psutil.Process(raylets[0].process.pid).children(recursive=True)
        except psutil.Error:  # the raylet is gone already
            children = []

        def kill_now(**kwargs: Any) -> None:
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            kill(**{**kwargs, "allow_graceful": False})

        node.kill_all_processes = kill_now  # type: ignore[union-attr]
    ray.shutdown()
