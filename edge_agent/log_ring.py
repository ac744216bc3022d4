"""A bounded ring of the agent's recent log records, for the ``collect_logs`` job.

:class:`LogRing` is a :class:`logging.Handler` the agent puts on the
``edgefleet`` logger while it runs: each record is formatted to one line
(newlines inside a message escaped) and kept as UTF-8 text; once the lines
hold more than ``max_bytes`` (64 KiB by default, the most a job may ask for:
:data:`fleet_protocol.jobs.MAX_LOG_BYTES`) the oldest go. A single line is cut
to 2 KiB. It keeps only what the logging levels let through (INFO and up when
the agent runs as a service), never writes to disk and reads no files: a job
cannot name a path.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from fleet_protocol.jobs import MAX_LOG_BYTES

MAX_LINE_BYTES = 2048
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogRing(logging.Handler):
    def __init__(self, max_bytes: int = MAX_LOG_BYTES):
        super().__init__()
        self.max_bytes = max_bytes
        self.setFormatter(logging.Formatter(_FORMAT))
        self._lines: deque[bytes] = deque()
        self._bytes = 0
        self._ring_lock = threading.Lock()
        self.dropped = 0  # lines pushed out by newer ones since the start

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record).replace("\\", "\\\\").replace("\n", "\\n")
        except Exception:  # noqa: BLE001 - a bad log call must not break the agent
            self.handleError(record)
            return
        cut = text.encode("utf-8", "replace")[:MAX_LINE_BYTES].decode("utf-8", "ignore")  # no half character
        line = cut.encode("utf-8") + b"\n"
        with self._ring_lock:
            self._lines.append(line)
            self._bytes += len(line)
            while self._bytes > self.max_bytes:
                self._bytes -= len(self._lines.popleft())
                self.dropped += 1

    def tail(self, max_bytes: int) -> str:
        """The newest whole lines that fit in ``max_bytes``, oldest first."""
        picked, size = [], 0
        with self._ring_lock:
            for line in reversed(self._lines):
                if size + len(line) > max_bytes:
                    break
                picked.append(line)
                size += len(line)
        return b"".join(reversed(picked)).decode("utf-8", "replace")

    @property
    def size_bytes(self) -> int:
        return self._bytes
