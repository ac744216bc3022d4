"""Message schemas, topics and the OIP codec refuse bad input with one error type."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fleet_protocol import messages, oip, topics
from fleet_protocol.errors import BadDataError, MessageError
from fleet_protocol.manifest import BundleManifest

PARSERS = [messages.parse_reported_state, messages.parse_device_status, messages.parse_telemetry_batch,
           messages.parse_fetch_request, messages.parse_desired_envelope, messages.decode_chunk]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_every_message_parser_refuses_garbage_with_a_message_error(payload):
    for parse in PARSERS:
        try:
            parse(payload)
        except MessageError:
            pass


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(st.sampled_from(["type", "records", "device_id", "outbox_id", "chunks", "modules",
                                            "state", "generation", "ts", "bundle_digest"]),
                           json_values, max_size=8))
def test_parsers_refuse_wrongly_typed_fields_with_a_message_error(doc):
    for kind in ("telemetry-batch", "fetch-request", "reported-state", "device-status"):
        payload = json.dumps({**doc, "type": kind}).encode()
        for parse in PARSERS:
            try:
                parse(payload)
            except MessageError:
                pass


@settings(max_examples=200, deadline=None)
@given(doc=json_values)
def test_manifest_parser_refuses_garbage_with_a_bad_data_error(doc):
    try:
        BundleManifest.from_dict(doc)
    except BadDataError:
        pass


@settings(max_examples=200, deadline=None)
@given(body=json_values)
def test_oip_decoder_refuses_garbage_with_a_message_error(body):
    try:
        oip.decode_request(body)
    except MessageError:
        pass


def test_telemetry_batch_round_trips():
    batch = messages.TelemetryBatch("dev-1", "ob1", (messages.TelemetryRecord(1, "2026-01-01T00:00:00Z", "heartbeat",
                                                                               {"cpu": 3}),))
    assert messages.parse_telemetry_batch(messages.encode(batch.to_dict())) == batch


def test_fetch_request_with_too_many_chunks_is_refused():
    request = messages.FetchRequest("dev-1", "a" * 64, tuple(["b" * 64] * (messages.MAX_FETCH_CHUNKS + 1)))
    with pytest.raises(MessageError, match="1 to 256 chunks"):
        messages.parse_fetch_request(messages.encode(request.to_dict()))


def test_truncated_chunk_payload_is_refused():
    payload = messages.encode_chunk(b"hello world")
    assert messages.decode_chunk(payload)[1] == b"hello world"
    with pytest.raises(MessageError, match="truncated"):
        messages.decode_chunk(payload[:-1])


def test_device_topic_refuses_wildcards_in_ids():
    with pytest.raises(MessageError):
        topics.device_topic("dev/+", "desired")
    assert topics.parse_device_topic(topics.device_topic("dev-1", "telemetry")) == ("dev-1", "telemetry")
    with pytest.raises(MessageError):
        topics.parse_device_topic("edgefleet/v1/devices/dev-1/other")


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64", "INT32", "BOOL"])
def test_oip_tensors_round_trip(datatype):
    array = (np.arange(6) % 2).reshape(2, 3).astype(oip.DATATYPES[datatype])
    request = oip.decode_request(oip.encode_request({"x": array}))
    assert request.inputs["x"].dtype == array.dtype
    np.testing.assert_array_equal(request.inputs["x"], array)


def test_oip_bytes_tensor_round_trips():
    outputs = oip.decode_response(oip.encode_response("m", "1", {"s": np.array(["a", "b"], dtype=object)}))
    assert outputs["s"].tolist() == ["a", "b"]


def test_oip_nested_data_is_accepted_row_major():
    request = oip.decode_request({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32",
                                              "data": [[1, 2], [3, 4]]}]})
    assert request.inputs["x"].tolist() == [[1, 2], [3, 4]]


def test_oip_shape_mismatch_names_the_tensor():
    with pytest.raises(MessageError, match="input 'x': shape \\[2, 2\\] needs 4 values, got 3"):
        oip.decode_request({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]})


def test_oip_unknown_datatype_is_refused():
    with pytest.raises(MessageError, match="datatype 'FP8'"):
        oip.decode_request({"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]})
