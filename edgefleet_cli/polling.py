"""``--wait``/``--watch``: poll the server with a spinner until a state is final, then print it.

:func:`device_problems` turns the devices that did not end up running the
version into one line for the non-zero exit that follows; the commands
decide what counts as a failure.
"""

from __future__ import annotations

import time
from typing import Callable

from .errors import CliError
from .output import console


def wait_until(fetch: Callable[[], dict], *, finished: Callable[[dict], bool], describe: Callable[[dict], str],
               show: Callable[[dict], None], timeout: float, what: str, quiet: bool) -> dict:
    """Fetch every 0.5 s until ``finished``; show the last state (unless ``quiet``) and return it.

    After ``timeout`` seconds the last state is shown and a :class:`CliError` names ``what`` and ``describe``.
    """
    deadline = time.monotonic() + timeout
    with console.status("waiting…", spinner="dots") as spinner:
        while True:
            value = fetch()
            spinner.update(describe(value))
            if finished(value):
                break
            if time.monotonic() > deadline:
                if not quiet:
                    show(value)
                raise CliError(f"{what} not finished after {timeout:.0f}s: {describe(value)}")
            time.sleep(0.5)
    if not quiet:
        show(value)
    return value


def device_problems(devices: list[dict]) -> str:
    """``dev-01 failed (install/health_check_failed: …); dev-02 refused (fit/gate_refused: …)`` for the
    failed and refused devices of a deployment or rollout; empty when there are none."""
    return "; ".join(f"{d['device_id']} {d['state']}" + (
        f" ({d['error'].get('category')}/{d['error'].get('code')}: {d['error'].get('message')})" if d.get("error")
        else "") for d in devices if d["state"] in ("failed", "refused"))
