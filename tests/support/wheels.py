"""A wheel mirror for install tests: this tree's wheel plus every wheel ``edgefleet[agent]`` needs.

The tree is copied (sources only) and built with ``pip wheel --no-deps
--no-build-isolation``, so a stale ``build/`` in the checkout cannot leak old
files into the wheel. Dependency wheels are kept between runs in
``$EDGEFLEET_TEST_WHEEL_CACHE`` (default ``~/.cache/edgefleet/test-wheels``):
pip is first asked to fill the mirror from that cache alone (no network);
only when something is missing does it download into the cache from the
configured index, once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _sources() -> list[str]:
    """pyproject.toml, README.md and the packages pyproject.toml includes (``fleet_protocol*`` → fleet_protocol)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [p.rstrip("*").rstrip(".") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    return ["pyproject.toml", "README.md", *sorted(set(packages))]


def wheel_cache() -> Path:
    default = Path.home() / ".cache" / "edgefleet" / "test-wheels"
    return Path(os.environ.get("EDGEFLEET_TEST_WHEEL_CACHE", default))


def build_mirror(workdir: Path) -> Path:
    """``workdir/mirror`` holding this tree's ``edgefleet`` wheel and the wheels of its agent dependencies."""
    source, mirror, cache = workdir / "source", workdir / "mirror", wheel_cache()
    source.mkdir(parents=True)
    mirror.mkdir()
    cache.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in _sources():
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=ignore)
        else:
            shutil.copy2(REPO / name, source / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(mirror), str(source))
    (wheel,) = mirror.glob("edgefleet-*.whl")
    requirement = f"edgefleet[agent] @ {wheel.as_uri()}"
    download = ("download", "-q", "-d", str(cache), requirement)
    try:
        _pip(*download, "--no-index", "--find-links", str(cache))
    except AssertionError:  # a dependency is not cached yet (first run, or a new version): fetch it once
        _pip(*download)
    cache.joinpath(wheel.name).unlink(missing_ok=True)  # pip saves the requirement itself too
    for path in cache.iterdir():
        if path.suffix == ".whl" and not path.name.startswith("edgefleet-"):
            try:
                os.link(path, mirror / path.name)  # 75 MB of wheels: no copy where the cache shares the disk
            except OSError:
                shutil.copy2(path, mirror / path.name)
    return mirror


def _pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
