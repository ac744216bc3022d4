"""A number in a path or header is ASCII digits: ``'²'.isdigit()`` is True but ``int('²')`` fails, which turned a
version of ``²`` or a ``Content-Length: ²`` into a 500 or a dropped connection instead of a clear refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent.offload import CloudScoreResult
from edgefleet_cli.commands.deploy import _parse_split
from edgefleet_cli.commands.model import split_ref
from edgefleet_cli.errors import CliError
from fleet_server.audit import path_object
from tests.agent.test_scoring_api import _raw, body, served  # noqa: F401 - the agent's scoring API fixture
from tests.server.conftest import api, config, fleet  # noqa: F401 - the server API fixtures


def test_a_model_version_of_non_ascii_digits_is_not_found_on_the_cloud_api(api):  # noqa: F811
    for path in ("/v2/models/iris/versions/%C2%B2", "/v2/models/iris/versions/%D9%A1"):  # '²' and Arabic-Indic 1
        response = api.get(path)
        assert response.status_code == 404 and "is not a registered version number" in response.json()["error"]


def test_a_content_length_of_non_ascii_digits_is_refused_by_the_agent_scoring_api(served):  # noqa: F811
    url, _ = served
    payload = json.dumps(body(np.ones((1, 4), np.float32))).encode()
    head = (b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: \xb2\r\n\r\n")
    assert _raw(url, head, payload).startswith(b"HTTP/1.1 411 ")


def test_the_audit_log_keeps_a_non_ascii_version_as_text():
    assert path_object("/api/models/{name}/versions/{version}", {"name": "iris", "version": "²"}) == {
        "model": "iris", "version": "²"}


def test_a_cloud_answer_with_a_non_ascii_model_version_reads_as_version_0():
    answer = {"model_name": "iris", "model_version": "²", "outputs": [
        {"name": "y", "shape": [1], "datatype": "INT64", "data": [1]}]}
    assert CloudScoreResult(answer).model_version == 0


@pytest.mark.parametrize("parse, value", [(split_ref, "iris:²"), (split_ref, "iris:\u0661"),
                                          (_parse_split, ["²=50"]), (_parse_split, ["1=\u0665\u0660"]),
                                          (_parse_split, ["\u0661=50"])])
def test_a_cli_version_or_split_weight_of_non_ascii_digits_is_a_usage_error(parse, value):
    with pytest.raises(CliError) as refused:
        parse(value)
    assert refused.value.exit_code == 2
