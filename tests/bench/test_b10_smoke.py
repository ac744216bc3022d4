"""B10 (REST JSON vs REST binary vs gRPC on one agent) at reduced size; no timing is asserted.

Slow (a server, an agent process): run with ``pytest -m slow tests/bench``.
"""

from __future__ import annotations

import pytest

from benchmarks import b10_wire


@pytest.mark.slow
def test_b10_the_three_wires_agree_and_each_answers_requests(tmp_path):
    result = b10_wire.run(seconds=0.6, rounds=2, size=16, publish=False, workdir=tmp_path)
    assert set(result["wires"]) == {"rest-json", "rest-binary", "grpc"}
    assert all(w["requests"] > 0 for w in result["wires"].values()), result["wires"]
    assert result["request_bytes"]["rest-binary"] < result["request_bytes"]["rest-json"]
    assert "B10 |" in b10_wire._row(result)
