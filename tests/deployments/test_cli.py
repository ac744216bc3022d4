"""The deploy and device commands against a real server and agents: rollouts, groups, explain, export/import."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from edgefleet_cli.main import app
from tests.deployments.conftest import ADMIN_TOKEN


def edgefleet(fleet, *args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"EDGEFLEET_SERVER": fleet.server.url,
                                                      "EDGEFLEET_TOKEN": ADMIN_TOKEN, "COLUMNS": "200"})
    assert result.exit_code == 0, f"edgefleet {' '.join(args)}:\n{result.output}"
    return result.output


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
