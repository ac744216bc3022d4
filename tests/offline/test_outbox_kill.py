"""The outbox survives kill -9: every record whose add() returned is there after the process dies."""

from __future__ import annotations

import signal
import subprocess
import sys

from edge_agent.outbox import Outbox
from tests.support.net import wait_for

WRITER = """
import sys
from pathlib import Path
from edge_agent.outbox import Outbox
box = Outbox(Path(sys.argv[1]))
n = 0
while True:
    box.add("capture" if n % 2 else "event", {"n": n})
    print(n, flush=True)
    n += 1
"""


def test_records_acknowledged_before_kill_9_are_all_there_in_order(tmp_path):
    path = tmp_path / "agent.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    wait_for(lambda: lines.append(writer.stdout.readline()) or len(lines) >= 10, what="10 records written")
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    acknowledged = int(lines[-1])
    records = Outbox(path).pending(100_000)
    assert [r.data["n"] for r in records][:acknowledged + 1] == list(range(acknowledged + 1))
