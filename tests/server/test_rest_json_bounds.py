"""JSON request bodies on the REST API are bounded as MQTT messages are: size and nesting are checked on the raw
bytes before FastAPI parses them, and a refusal says why (not FastAPI's "There was an error parsing the body")."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from fleet_protocol.canonical import MAX_JSON_DEPTH, parse_json_object
from fleet_protocol.errors import MessageError
from fleet_server.api.app import create_app
from tests.server.conftest import ADMIN_TOKEN

DEEP = 100_000
JSON = {"content-type": "application/json"}


def mqtt_reason(payload: bytes) -> str:
    """What the shared JSON entry point says about ``payload`` (as an MQTT message's refusal says)."""
    with pytest.raises(MessageError) as refused:
        parse_json_object(payload, what="the request body", max_bytes=len(payload))
    return str(refused.value)


@pytest.mark.parametrize("method, path", [("POST", "/api/devices"), ("PATCH", "/api/devices/cam-1"),
                                          ("POST", "/api/deployments")])
def test_a_deeply_nested_rest_body_is_refused_with_the_reason_an_mqtt_message_gets(api, method, path, caplog):
    api.post("/api/devices", json={"id": "cam-1"})
    body = b'{"tags": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    with caplog.at_level(logging.WARNING):
        response = api.request(method, path, content=body, headers=JSON)
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": mqtt_reason(body)}
    assert f"nests arrays and objects {DEEP + 1} deep, more than the {MAX_JSON_DEPTH} allowed" in response.text
    assert [r for r in caplog.records if r.exc_info] == []


def test_a_json_body_within_the_bounds_still_reaches_its_route(api):
    nested = {"id": "cam-2", "name": "x", "tags": {"site": "lab"}}
    assert api.post("/api/devices", json=nested).status_code == 201
    assert api.get("/api/devices/cam-2").json()["tags"] == {"site": "lab"}
    response = api.post("/api/devices", content=b'{"id": "cam-3"', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"] == ("invalid request: body: JSON decode error: Expecting ',' delimiter "
                                         "at character 14")


def test_a_json_body_over_the_limit_without_a_declared_length_is_refused(config, fleet):
    config.max_upload_bytes = 0  # the limit is then the multipart overhead alone (1 MiB)
    client = TestClient(create_app(config, fleet=fleet), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    def chunks():  # a generator: sent chunked, with no Content-Length to refuse it by
        yield b'{"id": "cam-4", "name": "'
        for _ in range(40):
            yield b"x" * 32_768
        yield b'"}'

    with client:
        response = client.post("/api/devices", content=chunks(), headers=JSON)
        assert response.status_code == 413, response.text
        assert "larger than the server's limit of 1048576 bytes" in response.json()["detail"]
        assert client.get("/api/devices/cam-4").status_code == 404
