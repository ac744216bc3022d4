"""GET /install.sh (the fleet URL filled in, a hostile Host refused) and the /wheels/ mirror (a pip --find-links
page; nothing outside the wheels dir)."""

from __future__ import annotations

import subprocess

import pytest
from fastapi.testclient import TestClient

from edge_agent import __version__
from fleet_server.api.app import create_app
from fleet_server.config import ServerConfig


def test_install_script_names_the_url_the_request_came_in_on_and_needs_no_token(config, fleet):
    client = TestClient(create_app(config, fleet=fleet), base_url="http://fleet.example:8080")
    response = client.get("/install.sh")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/x-shellscript")
    assert "FLEET_URL='http://fleet.example:8080'" in response.text
    assert f"AGENT_VERSION='{__version__}'" in response.text


def test_configured_public_url_wins_over_the_request(config, fleet):
    config.public_url = "https://fleet.example.com/edge"
    client = TestClient(create_app(config, fleet=fleet), base_url="http://10.0.0.5:8080")
    assert "FLEET_URL='https://fleet.example.com/edge'" in client.get("/install.sh").text


@pytest.mark.parametrize("host", ["x';reboot;'", "fleet$(id)"])
def test_host_header_that_is_not_a_plain_host_is_refused_not_written_into_the_script(api, host):
    response = api.get("/install.sh", headers={"Host": host})
    assert response.status_code == 400
    assert "--public-url" in response.json()["detail"]


def test_public_url_with_shell_characters_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="fleet URL"):
        ServerConfig(data_dir=tmp_path, public_url="https://fleet;rm -rf /")


def test_rendered_script_help_names_this_server_and_version(api):
    script = api.get("/install.sh", headers={"Host": "fleet.example"}).text
    result = subprocess.run(["sh", "-s", "--", "--help"], input=script, capture_output=True, text=True)
    assert result.returncode == 0
    assert f"Install the edgefleet agent (version {__version__}) from http://fleet.example" in result.stdout


def test_wheel_mirror_lists_package_files_for_pip_and_serves_them(config, fleet, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "numpy-2.0.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel bytes")
    (wheels / "notes.txt").write_text("not a package")
    config.wheels_dir = wheels
    client = TestClient(create_app(config, fleet=fleet))
    page = client.get("/wheels/")
    assert page.status_code == 200
    assert '<a href="numpy-2.0.0-cp311-cp311-linux_x86_64.whl">' in page.text and "notes.txt" not in page.text
    assert client.get("/wheels/numpy-2.0.0-cp311-cp311-linux_x86_64.whl").content == b"wheel bytes"
    assert client.get("/wheels/notes.txt").status_code == 404


def test_wheel_mirror_serves_nothing_outside_its_directory(config, fleet, tmp_path):
    (tmp_path / "secret-1.0-py3-none-any.whl").write_bytes(b"outside")
    config.wheels_dir = tmp_path / "wheels"
    config.wheels_dir.mkdir()
    client = TestClient(create_app(config, fleet=fleet))
    for path in ("/wheels/..%2Fsecret-1.0-py3-none-any.whl", "/wheels/%2E%2E/secret-1.0-py3-none-any.whl"):
        assert client.get(path).status_code == 404


def test_server_without_a_wheels_dir_says_so_on_an_empty_page(api):
    page = api.get("/wheels/")
    assert page.status_code == 200 and "--wheels-dir" in page.text and "<a " not in page.text
