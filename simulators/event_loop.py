"""A small event loop on one thread: a selector, a wakeup socketpair, a command queue and timers.

:class:`EventLoop` is the generic half of :class:`simulators.mqtt_loop.MqttLoop`:
:meth:`EventLoop.call_soon` and :meth:`EventLoop.call_later` are thread-safe
(a command queue plus one byte on a socketpair wakes the selector), timers
live in a heap, and a function that raises is logged without stopping the
loop. Subclasses register their sockets on ``self._selector`` with a non-None
``data`` and handle readiness in :meth:`EventLoop._dispatch`.

It is not asyncio: no coroutines, futures or transports, just callbacks.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import resource
import selectors
import socket
import threading
import time
from typing import Callable

log = logging.getLogger("edgefleet.simulators.event_loop")


def raise_fd_limit() -> int:
    """Raise this process's open-file limit (RLIMIT_NOFILE) to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


class TimerHandle:
    """A function scheduled with :meth:`EventLoop.call_later`; :meth:`cancel` is thread-safe."""

    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn: Callable[[], object]):
        self.when, self.fn, self.cancelled = when, fn, False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    """One thread running a selector, thread-safe ``call_soon``/``call_later``, and subclass hooks."""

    def __init__(self, name: str):
        self.name = name
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._wake_pending = False
        self._commands: collections.deque[Callable[[], object]] = collections.deque()
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._running = False

    def start(self) -> None:
        """Raise the open-file limit and start the loop thread."""
        if self._thread is not None:
            return
        raise_fd_limit()
        self._running = True
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (after :meth:`_on_exit`) and close the selector."""
        if self._thread is None:
            return
        self._running = False
        self._wake()
        if threading.get_ident() != self._thread_id:
            self._thread.join(timeout_s)
        self._thread = None

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread_id

    def call_soon(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` on the loop thread as soon as possible (thread-safe)."""
        self._commands.append(fn)
        if not self.in_loop_thread():
            self._wake()

    def call_later(self, delay_s: float, fn: Callable[[], object]) -> TimerHandle:
        """Run ``fn()`` on the loop thread after ``delay_s`` seconds (thread-safe); returns a cancellable handle."""
        handle = TimerHandle(time.monotonic() + max(0.0, delay_s), fn)
        if self.in_loop_thread():
            heapq.heappush(self._timers, (handle.when, next(self._seq), handle))
        else:
            self.call_soon(lambda: heapq.heappush(self._timers, (handle.when, next(self._seq), handle)))
        return handle

    # --- subclass hooks -------------------------------------------------------------------------

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        """A registered socket (``key.data`` is not None) is ready."""
        raise NotImplementedError

    def _on_exit(self) -> None:
        """On the loop thread, once it stops: close what is still open."""

    # --- the loop thread ------------------------------------------------------------------------

    def _run(self) -> None:
        self._thread_id = threading.get_ident()
        try:
            while self._running:
                self._step()
        except Exception:  # noqa: BLE001 - reported, then every socket is closed below
            log.exception("%s crashed", self.name)
        finally:
            self._guard(self._on_exit)
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _step(self) -> None:
        if self._commands:
            timeout = 0.0
        elif self._timers:
            timeout = min(1.0, max(0.0, self._timers[0][0] - time.monotonic()))
        else:
            timeout = 1.0
        for key, mask in self._selector.select(timeout):
            if key.data is None:
                self._drain_wake()
            else:
                self._dispatch(key, mask)
        for _ in range(len(self._commands)):
            self._guard(self._commands.popleft())
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            handle = heapq.heappop(self._timers)[2]
            if not handle.cancelled:
                self._guard(handle.fn)

    def _guard(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:  # noqa: BLE001 - one bad callback must not stop every client
            log.exception("%s: callback failed", self.name)

    def _wake(self) -> None:
        if self._wake_pending:
            return
        self._wake_pending = True
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def _drain_wake(self) -> None:
        self._wake_pending = False
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
