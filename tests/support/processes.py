"""Stopping a service a test started: SIGTERM, then SIGKILL if it has not exited in time; always reaped."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """Stop ``process`` (None or already exited: nothing to do) by its own pid and wait for it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
