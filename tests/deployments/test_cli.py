"""The deploy and device commands against a real server and agents: rollouts, groups, explain, export/import."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgefleet_cli.errors import CliError
from edgefleet_cli.main import app
from tests.deployments.conftest import ADMIN_TOKEN

COLUMNS = 200


def invoke(fleet, *args: str) -> tuple[int, str]:
    """Exit code and output (stdout, then the one-line error ``edgefleet`` prints for a CliError)."""
    result = CliRunner().invoke(app, list(args), env={"EDGEFLEET_SERVER": fleet.server.url,
                                                      "EDGEFLEET_TOKEN": ADMIN_TOKEN, "COLUMNS": str(COLUMNS)})
    if isinstance(result.exception, CliError):
        return result.exception.exit_code, result.output + str(result.exception)
    return result.exit_code, result.output


def edgefleet(fleet, *args: str) -> str:
    code, output = invoke(fleet, *args)
    assert code == 0, f"edgefleet {' '.join(args)}:\n{output}"
    return output


def test_rollout_group_explain_and_export_import_from_the_cli(fleet, tmp_path):
    fleet.start_agents(3, tags={"site": "lab"})
    fleet.build()
    rollout = json.loads(edgefleet(fleet, "deploy", "rollout", "create", "scaler", "--selector", "site=lab",
                                   "--canary", "1", "--wave-size", "2", "--wait", "--json"))
    assert rollout["state"] == "completed" and [len(w) for w in rollout["waves"]] == [1, 2]
    history = json.loads(edgefleet(fleet, "deploy", "rollout", "history", str(rollout["id"]), "--json"))
    assert [e["kind"] for e in history][-1] == "completed"
    assert "completed" in edgefleet(fleet, "deploy", "rollout", "status", str(rollout["id"]))

    group = json.loads(edgefleet(fleet, "device", "group", "create", "lab", "--selector", "site=lab", "--json"))
    assert group["members"] == ["dev-00", "dev-01", "dev-02"]
    fleet.build(scale=3.0)
    pinned = json.loads(edgefleet(fleet, "deploy", "create", "scaler:2", "--group", "lab", "--priority", "5",
                                  "--json"))
    explained = json.loads(edgefleet(fleet, "device", "explain", "dev-01", "--json"))["modules"][0]
    assert (explained["deployment_id"], explained["version"], explained["priority"]) == (pinned["id"], 2, 5)

    exported = tmp_path / "deployments.json"
    edgefleet(fleet, "deploy", "export", str(exported))
    definitions = json.loads(exported.read_text())["deployments"]
    assert [(d["version"], d["priority"], "plan" in d) for d in definitions] == [(1, 0, True), (2, 5, False)]
    created = json.loads(edgefleet(fleet, "deploy", "import", str(exported), "--json"))
    assert [list(c) for c in created] == [["rollout"], ["deployment"]]


def test_rollout_wait_exits_non_zero_with_the_pause_reason_and_each_failed_device(fleet):
    fleet.start_agents(2, tags={"site": "lab"})
    fleet.build()
    edgefleet(fleet, "deploy", "create", "scaler", "--selector", "site=lab", "--wait", "--timeout", "60")
    fleet.build(scale=3.0, broken=True)  # v2 fails its health check
    code, output = invoke(fleet, "deploy", "rollout", "create", "scaler:2", "--selector", "site=lab", "--canary", "1",
                          "--wait", "--timeout", "60")
    assert code == 1, output
    assert "rollout 1 paused: 1 device(s) failed (threshold crossed)" in output
    assert " failed (health/health_check_failed: " in output
    code, output = invoke(fleet, "deploy", "rollout", "status", "1", "--watch", "--timeout", "10")
    assert code == 1 and "rollout 1 paused" in output


def test_deploy_wait_exits_non_zero_naming_each_failed_device_and_its_error(fleet):
    fleet.start_agents(2, tags={"site": "lab"})
    fleet.build(broken=True)
    code, output = invoke(fleet, "deploy", "create", "scaler", "--selector", "site=lab", "--wait", "--timeout", "60")
    assert code == 1, output
    message = " ".join(output.split())
    assert "deployment 1 (scaler v1) did not reach every device:" in message
    for device in ("dev-00", "dev-01"):
        assert f"{device} failed (health/health_check_failed:" in message


def test_deploy_to_a_selector_matching_no_device_is_refused_unless_allow_empty(fleet):
    fleet.build()
    code, output = invoke(fleet, "deploy", "create", "scaler", "--selector", "site=mars")
    assert code == 1 and "no device matches selector site=mars" in output and "--allow-empty" in output
    rollout = json.loads(edgefleet(fleet, "deploy", "rollout", "create", "scaler", "--selector", "site=mars",
                                   "--allow-empty", "--json"))
    assert (rollout["state"], rollout["wave"]) == ("running", -1)
