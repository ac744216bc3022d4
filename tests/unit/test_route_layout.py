"""The API's layout rules (fleet_server/api/routes/__init__.py): one route module per resource, named by the URL;
route modules call services only (never the store, never another route module); routes declare the services they
use, not the fleet."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute

import fleet_server.api.routes as routes_package
from fleet_server.api import deps
from fleet_server.api.app import create_app
from fleet_server.config import ServerConfig

ROUTES = Path(routes_package.__file__).parent
SHARED = "_params"  # what route modules share; not a resource
ALIASES = {"v2": "inference", "install.sh": "install", "ready": "health"}
DASHBOARD = ("fleet_server.dashboard.router", {"/api/events", "/api/whoami"})
# The routes that may read the fleet itself: the server's health.
ON_THE_FLEET = {"/health", "/ready", "/v2/health/ready"}
STILL_ON_THE_FLEET = {"CloudScoring", "JobController", "RolloutController", "ServerMetrics"}  # threads, caches


def forbidden_imports(source: str, filename: str) -> list[str]:
    """Each import of ``fleet_server.store`` or of another route module by a route module, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = {0: "", 1: "fleet_server.api.routes", 2: "fleet_server.api", 3: "fleet_server"}[node.level]
            module = ".".join(part for part in (base, node.module or "") if part)
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            is_store = name == "fleet_server.store" or name.startswith("fleet_server.store.")
            sibling = name.startswith("fleet_server.api.routes.") and name.split(".")[3] != SHARED
            if is_store or sibling:
                found.append(f"{filename}:{node.lineno}: {name}")
                break
    return found


def test_route_modules_import_neither_the_store_nor_another_route_module():
    found = [use for path in sorted(ROUTES.glob("*.py")) if path.name != "__init__.py"
             for use in forbidden_imports(path.read_text(), path.name)]
    assert found == []


@pytest.mark.parametrize("source, found", [
    ("from ...store import devices as device_store\n", "m.py:1: fleet_server.store"),
    ("from ... import store\n", "m.py:1: fleet_server.store"),
    ("import fleet_server.store.models\n", "m.py:1: fleet_server.store.models"),
    ("from .deployments import note_target\n", "m.py:1: fleet_server.api.routes.deployments"),
    ("from . import devices\n", "m.py:1: fleet_server.api.routes.devices"),
])
def test_the_import_scan_finds_store_and_sibling_imports(source, found):
    assert forbidden_imports(source, "m.py") == [found]


def test_the_import_scan_allows_services_deps_and_the_shared_helpers():
    source = ("from ...registry import Registry\nfrom ..deps import RegistryDep\nfrom ._params import read_upload\n"
              "from . import _params\n")
    assert forbidden_imports(source, "m.py") == []


def routes_of(module) -> list[APIRoute]:
    """The API routes of every router a module defines, with the router's own prefix (not the app's ``/api``)."""
    return [route for router in vars(module).values() if isinstance(router, APIRouter)
            for route in router.routes if isinstance(route, APIRoute)]


@pytest.fixture(scope="module")
def api_routes() -> list[APIRoute]:
    modules = [importlib.import_module(f"fleet_server.api.routes.{path.stem}") for path in sorted(ROUTES.glob("*.py"))
               if not path.stem.startswith("_")]
    return [route for module in modules + [importlib.import_module(DASHBOARD[0])] for route in routes_of(module)]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> set[tuple[str, str]]:
    """``(method, path)`` of every operation the app serves, from its OpenAPI document."""
    app = create_app(ServerConfig(data_dir=tmp_path_factory.mktemp("layout") / "data"))
    try:
        return {(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item}
    finally:
        app.state.fleet.close()


def module_for(path: str) -> str:
    """``/api/devices/{id}/telemetry`` or ``/devices/{id}/telemetry`` → ``devices``: the route module the layout
    rule names for a path."""
    segments = [s for s in path.split("/") if s]
    first = segments[1] if segments[0] == "api" and len(segments) > 1 else segments[0]
    return ALIASES.get(first, first)


def test_every_route_lives_in_the_module_its_path_names(api_routes):
    misplaced = []
    for route in api_routes:
        module = route.endpoint.__module__
        if module == DASHBOARD[0]:
            if "/api" + route.path not in DASHBOARD[1]:
                misplaced.append(f"{route.path} in {module}")
        elif module != f"fleet_server.api.routes.{module_for(route.path)}":
            misplaced.append(f"{sorted(route.methods)} {route.path} in {module}")
    assert misplaced == []


def test_every_served_operation_comes_from_a_route_module(api_routes, served):
    found = {(method, prefix + route.path) for route in api_routes for method in route.methods
             for prefix in ("", "/api")}
    assert served - found == set()
    assert len(served) > 70  # the whole API was looked at


@pytest.mark.parametrize("path, module", [("/api/devices/{device_id}/telemetry", "devices"),
                                          ("/api/models/{name}/versions/{version}/drift", "models"),
                                          ("/v2/models/{name}/infer", "inference"), ("/install.sh", "install"),
                                          ("/wheels/{name}", "wheels"), ("/api/health", "health"),
                                          ("/jobs/{job_id}/cancel", "jobs")])
def test_the_layout_rule_names_a_module_by_the_first_segment(path, module):
    assert module_for(path) == module


def dependency_calls(dependant) -> set:
    """Every dependency callable a route depends on, through sub-dependencies."""
    found = set()
    for sub in dependant.dependencies:
        found.add(sub.call)
        found |= dependency_calls(sub)
    return found


def test_routes_declare_services_and_only_the_health_checks_and_event_stream_read_the_fleet(api_routes):
    on_the_fleet = sorted(route.path for route in api_routes
                          if deps._fleet in {getattr(call, "__wrapped__", call)
                                             for call in dependency_calls(route.dependant)}
                          and route.path not in ON_THE_FLEET)
    assert on_the_fleet == []


def test_the_services_the_routes_call_get_collaborators_not_the_fleet():
    services = {alias: getattr(deps, alias).__metadata__[0].dependency for alias in dir(deps)
                if alias.endswith("Dep") and alias not in ("FleetDep", "CredentialsDep")}
    given_the_fleet = []
    for alias, provider in services.items():
        cls = inspect.signature(provider).return_annotation
        cls = getattr(deps, cls) if isinstance(cls, str) else cls
        if not inspect.isclass(cls) or cls.__name__ in STILL_ON_THE_FLEET:
            continue
        if "fleet" in inspect.signature(cls.__init__).parameters:
            given_the_fleet.append(cls.__name__)
    assert given_the_fleet == []
    assert len(services) >= 15
