"""The agent's environments on the device, and the update state the agent and its supervisor share.

Layout under the install prefix (``/opt/edgefleet`` in production)::

    envs/<agent-version>/   one Python environment per agent version (bin/edgefleet, site-packages)
    current -> envs/<v>     the environment the agent runs from; moved by one atomic rename of a symlink
    confirmed -> envs/<v>   the last version that proved healthy: the supervisor runs from it (systemd ExecStart)
    update.json             the update state: which version is confirmed, the trial in progress, rollbacks
    health.json             the running agent's own health (pid, version, healthy, why not)

``update.json`` (written atomically, temp file + ``os.replace``)::

    {"confirmed": "0.1.0",
     "trial": {"version": "0.1.1", "previous": "0.1.0", "bundle_version": 2, "digest": "…",
               "started": 1764..., "deadline": 1764... | null, "starts": 0} | null,
     "rollbacks": [{"version", "bundle_version", "digest", "reason", "ts"}, ...]}   (the last ten)

The agent starts a trial (:func:`begin_trial`, then :func:`switch`) and asks to be restarted; the
supervisor (:mod:`edge_agent.supervisor`) confirms it or rolls it back and is the only writer after
that. :func:`install_env` makes a new environment: ``python -m venv``, then ``pip install --no-index
--find-links <the bundle's wheels>`` of the agent's own wheel, so nothing comes from the network.
What this module does not do: decide (the supervisor does), verify bundles (the reconciler did).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .installer import fsync_dir, write_atomic

STATE_FILE = "update.json"
HEALTH_FILE = "health.json"
MAX_ROLLBACKS_KEPT = 10
RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: "a new version is in place, start me again" (the supervisor restarts at once)
COMPLETE_MARKER = ".complete"
SUPERVISOR_ENV = "EDGEFLEET_SUPERVISOR_PID"  # set by the supervisor for the agent it runs


@dataclass
class Trial:
    version: str
    previous: str
    bundle_version: int
    digest: str
    started: float
    deadline: float | None = None  # set by the supervisor when it starts the new agent the first time
    starts: int = 0  # how many times the supervisor started the new agent


@dataclass
class UpdateState:
    confirmed: str | None = None
    trial: Trial | None = None
    rollbacks: list[dict] = field(default_factory=list)

    def rolled_back(self, digest: str) -> dict | None:
        """The newest rollback of the bundle ``digest`` on this device, or None."""
        return next((r for r in reversed(self.rollbacks) if r.get("digest") == digest), None)


class EnvInstallError(Exception):
    """Making a new environment failed (venv or pip); the message ends with pip's last lines."""


def env_dir(prefix: Path, version: str) -> Path:
    return prefix / "envs" / version


def current_version(prefix: Path, link: str = "current") -> str | None:
    """The version ``link`` (``current`` or ``confirmed``) points at (None when there is no link)."""
    try:
        return Path(os.readlink(prefix / link)).name
    except OSError:
        return None


def read_state(prefix: Path) -> UpdateState:
    """The update state; a missing file is the empty state. A damaged one raises ``ValueError``."""
    try:
        doc = json.loads((prefix / STATE_FILE).read_text())
    except FileNotFoundError:
        return UpdateState()
    trial = doc.get("trial")
    return UpdateState(confirmed=doc.get("confirmed"), trial=Trial(**trial) if trial else None,
                       rollbacks=list(doc.get("rollbacks") or []))


def write_state(prefix: Path, state: UpdateState) -> None:
    doc = {"confirmed": state.confirmed, "trial": asdict(state.trial) if state.trial else None,
           "rollbacks": state.rollbacks[-MAX_ROLLBACKS_KEPT:]}
    write_atomic(prefix / STATE_FILE, json.dumps(doc, indent=1, sort_keys=True).encode())


def switch(prefix: Path, version: str, link: str = "current") -> None:
    """Point ``link`` (``current`` or ``confirmed``) at ``envs/<version>`` with one atomic rename of a new
    symlink over the old one."""
    target = env_dir(prefix, version)
    if not (target / "bin").is_dir():
        raise FileNotFoundError(f"there is no agent environment {target}")
    tmp = prefix / f".{link}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(Path("envs") / version, tmp)
    os.replace(tmp, prefix / link)
    fsync_dir(prefix)


def install_env(prefix: Path, version: str, wheels: Path, *, base_site_packages: Path | None = None,
                timeout_s: float = 900.0) -> Path:
    """Make ``envs/<version>`` with the agent from ``wheels`` (no index); return it. A half-made one is replaced.

    ``base_site_packages``: an environment whose packages the new one may reuse (a ``.pth`` line), so a
    bundle need only carry what changed; unset, the bundle must carry every wheel ``edgefleet[agent]`` needs.
    """
    target = env_dir(prefix, version)
    own = sorted(wheels.glob("edgefleet-*.whl"))
    if len(own) != 1:
        raise EnvInstallError(f"{wheels} holds {len(own)} edgefleet wheels, not one")
    _remove_tree(target)  # a half-made one from a crash: ``current`` never pointed at it
    target.parent.mkdir(parents=True, exist_ok=True)
    try:  # made where it will live: pip writes the environment's absolute path into its bin/ scripts
        _run([sys.executable, "-m", "venv", str(target)], "python -m venv", timeout_s)
        if base_site_packages is not None:
            site = next((target / "lib").glob("python*/site-packages"))
            (site / "_edgefleet_base.pth").write_text(f"{base_site_packages}\n")
        _run([str(target / "bin" / "python"), "-m", "pip", "install", "--no-index", "--find-links", str(wheels),
              "--no-input", "--disable-pip-version-check", "-q", f"{own[0]}[agent]"], "pip install", timeout_s)
    except EnvInstallError:
        _remove_tree(target)
        raise
    (target / COMPLETE_MARKER).touch()  # install.sh counts an environment with it as complete
    fsync_dir(target.parent)
    return target


def remove_other_envs(prefix: Path, keep: set[str]) -> None:
    """Delete every environment whose version is not in ``keep`` (after a confirmed update)."""
    for entry in (prefix / "envs").iterdir() if (prefix / "envs").is_dir() else []:
        if entry.name not in keep:
            _remove_tree(entry)


def write_health(prefix: Path, *, version: str, healthy: bool, detail: str) -> None:
    doc = {"version": version, "pid": os.getpid(), "healthy": healthy, "detail": detail, "ts": time.time()}
    write_atomic(prefix / HEALTH_FILE, json.dumps(doc).encode())


def read_health(prefix: Path) -> dict | None:
    try:
        doc = json.loads((prefix / HEALTH_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _run(argv: list[str], what: str, timeout_s: float) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvInstallError(f"{what} failed: {exc}") from None
    if result.returncode != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise EnvInstallError(f"{what} exited with {result.returncode}: {tail}")


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
