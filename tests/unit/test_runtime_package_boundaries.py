"""The scoring runtime is one package (edgefleet_runtime) that the agent and the server import; the server never
reaches into the agent for it, and the runtime knows neither side. Checked on the source (every import, also those
inside functions), so a lazy import cannot slip past."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What fleet_server may still take from the agent: the agent's own version, for the install script it serves.
SERVER_MAY_IMPORT = {("fleet_server/device_install/__init__.py", "edge_agent", "__version__")}


def imports(source: str, filename: str) -> list[tuple[str, str]]:
    """``(module, name)`` for every absolute import in ``source`` (``name`` is ``""`` for ``import module``)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def offenders(package: str, forbidden: tuple[str, ...], allowed: set[tuple[str, str, str]] = frozenset()) -> list:
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        where = str(path.relative_to(REPO))
        for module, name in imports(path.read_text(encoding="utf-8"), where):
            if module.split(".")[0] in forbidden and (where, module, name) not in allowed:
                out.append(f"{where}: {module}{'.' + name if name else ''}")
    return out


def test_fleet_server_imports_the_scoring_runtime_not_the_agent():
    assert offenders("fleet_server", ("edge_agent",), SERVER_MAY_IMPORT) == []


def test_the_scoring_runtime_imports_neither_the_agent_nor_the_server():
    assert offenders("edgefleet_runtime", ("edge_agent", "fleet_server", "edgefleet_cli", "simulators")) == []


@pytest.mark.parametrize("source, found", [
    ("from edge_agent.runtime import Runtime\n", [("edge_agent.runtime", "Runtime")]),
    ("def f():\n    import edge_agent.inputs\n", [("edge_agent.inputs", "")]),
    ("from edge_agent import accelerators\n", [("edge_agent", "accelerators")]),
    ("from .runtime import Runtime\n", []),
])
def test_the_import_scan_sees_top_level_lazy_and_package_imports(source, found):
    assert imports(source, "m.py") == found
