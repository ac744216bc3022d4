"""The rules of agent bundles and of the update state, on plain values and a temp install prefix."""

from __future__ import annotations

import os

import pytest

from edge_agent import agent_envs
from edge_agent.agent_envs import Trial, UpdateState, current_version, read_state, switch, write_state
from edge_agent.config import AgentConfig
from edge_agent.self_update import AgentUpdater
from edge_agent.supervisor import Supervisor
from fleet_protocol import bundle_file
from fleet_protocol.canonical import canonical_json, sha256_hex
from fleet_protocol.errors import ManifestError
from fleet_protocol.manifest import BundleManifest
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now

WHEEL = "wheels/edgefleet-0.2.0-py3-none-any.whl"


def agent_manifest(files: dict[str, bytes] | None = None, **overrides) -> BundleManifest:
    args = {"module": "edgefleet-agent", "version": 1, "runtime": "wheels", "model": WHEEL,
            "files": files or {WHEEL: b"agent"}, "created": to_iso(utc_now()), "kind": "agent", **overrides}
    return bundle_file.build_manifest(**args)


def test_module_manifest_without_a_kind_keeps_its_digest():
    """A manifest signed before kinds existed has no 'kind' key: parsed and written again, it is the same."""
    module = bundle_file.build_manifest(module="iris", version=1, runtime="onnx", model="m.onnx",
                                        files={"m.onnx": b"model"}, created="2026-01-01T00:00:00Z")
    signed_before = module.to_dict()
    assert "kind" not in signed_before
    again = BundleManifest.from_dict(signed_before)
    assert again.kind == "module" and again.digest == sha256_hex(canonical_json(signed_before))


def test_agent_manifest_names_its_version_by_its_edgefleet_wheel():
    manifest = BundleManifest.from_dict(agent_manifest({WHEEL: b"a", "wheels/numpy-2.0-cp311-abi3-any.whl": b"n"})
                                        .to_dict())
    assert (manifest.kind, manifest.agent_version) == ("agent", "0.2.0")


@pytest.mark.parametrize("files, overrides, reason", [
    ({WHEEL: b"a", "install.sh": b"rm -rf /"}, {}, "is not a wheel under wheels/"),
    ({WHEEL: b"a", "wheels/sub/x-1-py3-none-any.whl": b"x"}, {}, "is not a wheel under wheels/"),
    ({WHEEL: b"a"}, {"module": "iris"}, "module 'edgefleet-agent' with runtime 'wheels'"),
    ({"wheels/numpy-2.0-cp311-abi3-any.whl": b"n"}, {"model": "wheels/numpy-2.0-cp311-abi3-any.whl"},
     "must be its edgefleet wheel"),
])
def test_agent_manifest_holds_only_wheels_with_the_agent_as_its_model(files, overrides, reason):
    with pytest.raises(ManifestError, match=reason):
        agent_manifest(files, **overrides)


def test_unknown_manifest_kind_is_refused():
    doc = agent_manifest().to_dict()
    doc["kind"] = "firmware"
    with pytest.raises(ManifestError, match="kind 'firmware' is not one of module, agent"):
        BundleManifest.from_dict(doc)


def test_agent_not_run_by_a_supervisor_refuses_agent_bundles(tmp_path, monkeypatch):
    monkeypatch.delenv(agent_envs.SUPERVISOR_ENV, raising=False)
    updater = AgentUpdater(prefix=tmp_path, base_site_packages=None, installer=None, telemetry=None, outbox=None,
                           set_status=None, on_change=None, request_restart=None)
    assert updater.refusal("ab" * 32).code == "not_supervised"


def test_bundle_rolled_back_on_this_device_is_not_tried_again(tmp_path, monkeypatch):
    monkeypatch.setenv(agent_envs.SUPERVISOR_ENV, str(os.getpid()))
    write_state(tmp_path, UpdateState(confirmed="0.1.0", rollbacks=[
        {"version": "0.1.1", "previous": "0.1.0", "bundle_version": 3, "digest": "ab" * 32, "reason": "it crashed",
         "ts": 1.0}]))
    updater = AgentUpdater(prefix=tmp_path, base_site_packages=None, installer=None, telemetry=None, outbox=None,
                           set_status=None, on_change=None, request_restart=None)
    refused = updater.refusal("ab" * 32)
    assert refused.code == "agent_rolled_back" and "rolled back to 0.1.0: it crashed" in str(refused)
    assert updater.refusal("cd" * 32) is None, "a newer bundle may be tried"


def fake_envs(prefix, *versions):
    for version in versions:
        (prefix / "envs" / version / "bin").mkdir(parents=True)


def supervisor(prefix) -> Supervisor:
    return Supervisor(prefix / "agent.toml", AgentConfig(device_id="d", state_dir=prefix / "state",
                                                         trusted_keys=["00" * 32], install_prefix=prefix,
                                                         update_max_starts=2))


def test_rollback_cut_short_before_its_switch_is_finished_at_the_next_start(tmp_path):
    fake_envs(tmp_path, "0.1.0", "0.1.1")
    switch(tmp_path, "0.1.1")  # the rollback was recorded, then the supervisor died before switching back
    write_state(tmp_path, UpdateState(confirmed="0.1.0", rollbacks=[{"digest": "ab" * 32}]))
    assert supervisor(tmp_path)._begin_start(read_state(tmp_path)) is None
    assert current_version(tmp_path) == current_version(tmp_path, "confirmed") == "0.1.0"


def test_trial_whose_switch_never_happened_is_dropped(tmp_path):
    fake_envs(tmp_path, "0.1.0", "0.1.1")
    switch(tmp_path, "0.1.0")  # the agent recorded the trial, then died before it switched
    write_state(tmp_path, UpdateState(confirmed="0.1.0", trial=Trial("0.1.1", "0.1.0", 2, "ab" * 32, 1.0)))
    assert supervisor(tmp_path)._begin_start(read_state(tmp_path)) is None
    assert read_state(tmp_path).trial is None and current_version(tmp_path) == "0.1.0"


def test_trial_started_as_often_as_allowed_is_rolled_back_by_a_restarted_supervisor(tmp_path):
    fake_envs(tmp_path, "0.1.0", "0.1.1")
    switch(tmp_path, "0.1.1")
    write_state(tmp_path, UpdateState(confirmed="0.1.0", trial=Trial("0.1.1", "0.1.0", 2, "ab" * 32, 1.0,
                                                                     deadline=2e9, starts=2)))
    assert supervisor(tmp_path)._begin_start(read_state(tmp_path)) is None
    state = read_state(tmp_path)
    assert current_version(tmp_path) == "0.1.0" and state.confirmed == "0.1.0" and state.trial is None
    assert state.rolled_back("ab" * 32)["reason"] == "it exited 2 time(s) before it was healthy"


def test_version_install_sh_put_over_a_self_update_is_kept_and_recorded_as_confirmed(tmp_path):
    fake_envs(tmp_path, "0.1.1", "0.1.2")
    write_state(tmp_path, UpdateState(confirmed="0.1.1"))  # 0.1.1 came by self-update
    switch(tmp_path, "0.1.2")  # then install.sh of a newer server installed 0.1.2 and moved both links
    switch(tmp_path, "0.1.2", link="confirmed")
    assert supervisor(tmp_path)._begin_start(read_state(tmp_path)) is None
    assert current_version(tmp_path) == current_version(tmp_path, "confirmed") == "0.1.2"
    assert read_state(tmp_path).confirmed == "0.1.2"


def test_confirm_cut_short_before_its_link_switch_keeps_the_new_version(tmp_path):
    fake_envs(tmp_path, "0.1.0", "0.1.1")
    switch(tmp_path, "0.1.1")
    switch(tmp_path, "0.1.0", link="confirmed")  # update.json says confirmed, the link had not moved yet
    write_state(tmp_path, UpdateState(confirmed="0.1.1"))
    assert supervisor(tmp_path)._begin_start(read_state(tmp_path)) is None
    assert current_version(tmp_path) == current_version(tmp_path, "confirmed") == "0.1.1"


def test_env_base_inside_the_install_prefix_is_refused(tmp_path):
    """Environments under the prefix are deleted after updates: newer ones reusing their packages would break."""
    with pytest.raises(ValueError, match="agent_env_base must lie outside install_prefix"):
        AgentConfig(device_id="d", state_dir=tmp_path / "state", trusted_keys=["00" * 32], install_prefix=tmp_path,
                    agent_env_base=tmp_path / "envs/0.1.0/lib/python3.11/site-packages")
    assert AgentConfig(device_id="d", state_dir=tmp_path / "state", trusted_keys=["00" * 32], install_prefix=tmp_path,
                       agent_env_base="/usr/lib/python3/dist-packages").agent_env_base.is_absolute()


def test_supervise_with_current_pointing_at_a_missing_environment_says_why_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from edgefleet_cli.errors import CliError
    from edgefleet_cli.main import app

    (tmp_path / "opt/envs").mkdir(parents=True)
    (tmp_path / "opt/current").symlink_to("envs/9.9.9")
    config = tmp_path / "agent.toml"
    config.write_text(f'device_id = "d1"\nstate_dir = "state"\ntrusted_keys = ["{"00" * 32}"]\n'
                      'install_prefix = "opt"\n')
    result = CliRunner().invoke(app, ["agent", "supervise", "--config", str(config)])
    assert isinstance(result.exception, CliError), result.exception  # main() prints it as one `error:` line
    assert str(result.exception) == ("the supervisor cannot run the agent: there is no agent environment "
                                     f"{tmp_path}/opt/envs/9.9.9")
