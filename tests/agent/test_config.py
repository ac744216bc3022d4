"""Agent configuration from TOML: defaults, paths relative to the file, one-line errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import AgentConfig, ConfigError, load_config
from edge_agent.enroll import AgentOptions, agent_toml, broker_settings
from fleet_server.keys import new_signing_key

KEY = new_signing_key().public_key.to_hex()
PROFILES = Path(__file__).resolve().parents[2] / "firmware_profiles"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "agent.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_and_paths_relative_to_the_file(tmp_path):
    config = load_config(write(tmp_path, f'device_id = "gw-1"\nstate_dir = "state"\ntrusted_keys = ["{KEY}"]\n'
                                         'profile = "profiles/board.toml"\n[tags]\nsite = "berlin"\n'))
    assert config.state_dir == tmp_path / "conf" / "state"
    assert config.profile == str(tmp_path / "conf" / "profiles" / "board.toml")
    assert config.broker_host_port == ("127.0.0.1", 1883, False)
    assert (config.scoring_port, config.fetch_window_chunks, config.tags) == (8181, 16, {"site": "berlin"})
    assert isinstance(config.heartbeat_interval_s, float)


def test_a_profile_name_is_kept_as_a_name(tmp_path):
    config = load_config(write(tmp_path, f'device_id = "gw-1"\nstate_dir = "/var/x"\ntrusted_keys = ["{KEY}"]\n'
                                         'profile = "raspberry-pi-5"\n'))
    assert (config.profile, config.state_dir) == ("raspberry-pi-5", Path("/var/x"))


@pytest.mark.parametrize(("text", "field"), [
    ('state_dir = "s"\ntrusted_keys = [KEY]', "device_id"),
    ('device_id = "Bad Id"\nstate_dir = "s"\ntrusted_keys = [KEY]', "device_id"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = []', "trusted_keys"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = ["abcd"]', "trusted_keys[0]"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = [KEY]\nscoring_port = 70000', "scoring_port"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = [KEY]\nscoring_port = true', "scoring_port"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = [KEY]\nbroker_url = "http://x"', "broker_url"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = [KEY]\ngrpc_port = 70000', "grpc_port"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = [KEY]\ngrpc_port = "8001"', "grpc_port"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = [KEY]\ncloud_url = "grpx://fleet:8001"', "cloud_url"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = [KEY]\ncloud_url = "grpc://fleet"', "grpc_port, no path"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = [KEY]\ncloud_url = "grpc://fleet:8001/v2"', "no path"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = [KEY]\nfetch_timeout_s = -1', "fetch_timeout_s"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = [KEY]\nheartbeat = 3', "heartbeat"),
    ('device_id = "a"\nstate_dir = "s"\ntrusted_keys = [KEY]\n[tags]\nn = 1', "tags"),
    ('device_id = "a"\nstate_dir = ', "TOML"),
], ids=lambda v: v if "\n" not in v else None)
def test_a_bad_config_is_refused_with_one_line_naming_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text.replace("[KEY]", f'["{KEY}"]')))
    assert field in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_grpc_is_off_unless_a_port_is_set_and_the_cloud_may_be_a_grpc_url(tmp_path):
    base = f'device_id = "a"\nstate_dir = "s"\ntrusted_keys = ["{KEY}"]\n'
    assert load_config(write(tmp_path, base)).grpc_port is None
    config = load_config(write(tmp_path, base + 'grpc_port = 8001\ncloud_url = "grpc://fleet:8001"\n'))
    assert (config.grpc_port, config.cloud_url) == (8001, "grpc://fleet:8001")
    assert load_config(write(tmp_path, base + 'cloud_url = "grpcs://fleet:443"\n')).cloud_url == "grpcs://fleet:443"


def test_the_dataclass_validates_too(tmp_path):
    with pytest.raises(ConfigError, match="fetch_window_chunks"):
        AgentConfig(device_id="a", state_dir=tmp_path, trusted_keys=[KEY], fetch_window_chunks=0)


def test_the_config_enrollment_writes_reads_back_with_its_options_and_any_tag_text(tmp_path):
    tags = {"site": 'a "quoted" \\ value', "ünï code": "tab\there, DEL\x7f, ctl\x01, 😀", "rack.no": ""}
    values = {"device_id": "gw-1", "state_dir": str(tmp_path / "state"), "trusted_keys": [KEY],
              "profile": "raspberry-pi-5", "scoring_port": 8182, "cloud_url": "http://fleet:8080", "tags": tags}
    path = tmp_path / "agent.toml"
    path.write_text(agent_toml(values), encoding="utf-8")
    config = load_config(path)
    assert (config.profile, config.scoring_port, config.cloud_url, config.tags) == (
        "raspberry-pi-5", 8182, "http://fleet:8080", tags)


@pytest.mark.parametrize(("options", "message"), [
    (AgentOptions(cloud_url="ftp://fleet"), "cloud_url"),
    (AgentOptions(scoring_port=70000), "scoring_port"),
    (AgentOptions(profile="raspbery-pi-5"), "did you mean 'raspberry-pi-5'"),
    (AgentOptions(profile="boards/missing.toml"), "cannot be read"),
], ids=["cloud_url", "scoring_port", "profile name", "profile path"])
def test_enroll_options_are_checked_by_the_config_rules_before_enrolling(options, message):
    with pytest.raises(ConfigError, match=message):
        options.values()


def test_an_enroll_profile_path_is_written_absolute(tmp_path, monkeypatch):
    (tmp_path / "board.toml").write_bytes((PROFILES / "generic-cpu.toml").read_bytes())
    monkeypatch.chdir(tmp_path)
    assert AgentOptions(profile="board.toml", tags={"a": "b"}).values() == {
        "profile": str(tmp_path / "board.toml"), "tags": {"a": "b"}}


def test_an_enrolled_device_of_a_broker_cluster_gets_every_node_as_broker_urls(tmp_path):
    values = {"device_id": "cam-1", "state_dir": "state", "trusted_keys": [KEY],
              **broker_settings("mqtts://mq1:8883, mqtts://mq2:8883,mqtts://mq3:8883")}
    path = tmp_path / "agent.toml"
    path.write_text(agent_toml(values))
    config = load_config(path)
    assert [(b.host, b.port, b.tls) for b in config.brokers] == [("mq1", 8883, True), ("mq2", 8883, True),
                                                                 ("mq3", 8883, True)]
    assert broker_settings("mqtt://one:1883") == {"broker_url": "mqtt://one:1883"}


def test_broker_urls_that_mix_plain_and_tls_nodes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="broker_urls: .*mix mqtt:// and mqtts://"):
        AgentConfig(device_id="cam-1", state_dir=tmp_path, trusted_keys=[KEY],
                    broker_urls=["mqtts://mq1:8883", "mqtt://mq2:1883"])


def test_a_broker_url_outside_broker_urls_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is not in broker_urls"):
        AgentConfig(device_id="cam-1", state_dir=tmp_path, trusted_keys=[KEY], broker_url="mqtt://other:1883",
                    broker_urls=["mqtt://mq1:1883", "mqtt://mq2:1883"])
