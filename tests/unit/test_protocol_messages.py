"""Message schemas, topics and the OIP codec refuse bad input with one error type."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from fleet_protocol import messages, oip, topics
from fleet_protocol.errors import ManifestError, MessageError
from fleet_protocol.manifest import BundleManifest, file_entry

TS = "2026-01-01T00:00:00Z"
ERROR = {"code": "rollback", "category": "verification", "message": "older"}
VALID = {  # one well-formed message per parser, to mutate one field at a time
    messages.parse_reported_state: messages.ReportedState(
        "cam-1", 3, TS, (messages.ModuleReport("iris", "running", 1, "a" * 64),), agent_version="0.1",
        profile="generic-cpu", error=ERROR, stale=True, root_version=2, root_error=ERROR).to_dict(),
    messages.parse_device_status: messages.DeviceStatus(
        "cam-1", "online", TS, "generic-cpu", {"site": "lab"}, "0.1", "http://cam-1:8181").to_dict(),
    messages.parse_telemetry_batch: messages.TelemetryBatch(
        "cam-1", "outbox-a", (messages.TelemetryRecord(1, TS, "heartbeat", {"cpu": 3}),)).to_dict(),
    messages.parse_fetch_request: messages.FetchRequest("cam-1", "a" * 64, ("b" * 64,)).to_dict(),
}
REQUIRED = {
    messages.parse_reported_state: ("device_id", "generation", "ts", "modules"),
    messages.parse_device_status: ("device_id", "state"),
    messages.parse_telemetry_batch: ("device_id", "outbox_id", "records"),
    messages.parse_fetch_request: ("device_id", "bundle_digest", "chunks"),
}
TYPED_PARSERS = {**{parse: doc["type"] for parse, doc in VALID.items()}, messages.parse_root_chain: "root-chain"}
NOT_A_JSON_OBJECT = "is not UTF-8 JSON|is not valid JSON|must be a JSON object|nests arrays and objects"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)


def is_json_object(payload: bytes) -> bool:
    try:
        return isinstance(json.loads(payload), dict)
    except ValueError:
        return False


def wrongly_typed(valid: object):
    """JSON values of another type than ``valid`` (bool and int count as different; never None: that is
    an absent optional field)."""
    return json_values.filter(lambda value: value is not None and type(value) is not type(valid))


def parser_id(parse) -> str:
    return parse.__name__


@settings(max_examples=150, deadline=None)
@given(payload=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_every_message_parser_refuses_bytes_that_are_not_a_json_object(payload):
    assume(not is_json_object(payload))
    for parse in [*TYPED_PARSERS, messages.parse_desired_envelope]:
        with pytest.raises(MessageError, match=NOT_A_JSON_OBJECT):
            parse(payload)


@settings(max_examples=100, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=12), json_values, max_size=6), kind=json_values)
def test_every_message_parser_refuses_an_object_of_another_type(doc, kind):
    payload = json.dumps({**doc, "type": kind}).encode()
    for parse, expected in TYPED_PARSERS.items():
        if kind != expected:
            with pytest.raises(MessageError, match=f"expected a {expected} message, got type"):
                parse(payload)


@settings(max_examples=100, deadline=None)
@given(doc=st.dictionaries(st.text(max_size=12).filter(lambda k: k not in ("signed", "signatures")), json_values,
                           max_size=6))
def test_desired_state_parser_refuses_an_object_that_is_not_a_signed_envelope(doc):
    with pytest.raises(MessageError, match="desired state is not a signed envelope"):
        messages.parse_desired_envelope(json.dumps(doc).encode())


@pytest.mark.parametrize("parse", VALID, ids=parser_id)
def test_the_valid_examples_parse(parse):
    assert parse(json.dumps(VALID[parse]).encode()).to_dict() == VALID[parse]


@pytest.mark.parametrize("parse", VALID, ids=parser_id)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_parsers_refuse_a_wrongly_typed_field_naming_it(parse, data):
    valid = VALID[parse]
    key = data.draw(st.sampled_from(sorted(k for k in valid if k != "type" and valid[k] is not None)))
    value = data.draw(wrongly_typed(valid[key]))
    with pytest.raises(MessageError, match=f"field '{key}'"):
        parse(json.dumps({**valid, key: value}).encode())


@pytest.mark.parametrize("parse", REQUIRED, ids=parser_id)
def test_parsers_refuse_a_missing_required_field_naming_it(parse):
    for key in REQUIRED[parse]:
        doc = {k: v for k, v in VALID[parse].items() if k != key}
        with pytest.raises(MessageError, match=f"missing field '{key}'"):
            parse(json.dumps(doc).encode())


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=300) | st.binary(max_size=300).map(lambda data: b"EFC1" + data))
def test_chunk_decoder_refuses_payloads_without_a_valid_header_and_digest(payload):
    with pytest.raises(MessageError, match="no EFC1 header|does not match its own digest"):
        messages.decode_chunk(payload)


VALID_MANIFEST = BundleManifest(
    module="iris", version=1, runtime="onnx", model="model.onnx", created=TS, entry="main.py", sample="main.py",
    files=(file_entry("main.py", b"def run(x): return x"), file_entry("model.onnx", b"onnx")),
    target_profiles=("generic-cpu",), model_ref="iris:1", expires=TS, description="d", config={"a": "b"}).to_dict()


@settings(max_examples=100, deadline=None)
@given(doc=json_values | st.dictionaries(st.text(max_size=12).filter(lambda k: k != "type"), json_values,
                                         max_size=6))
def test_manifest_parser_refuses_garbage_naming_what_is_wrong(doc):
    reason = "field 'type' must be 'bundle-manifest'" if isinstance(doc, dict) else "must be a JSON object"
    with pytest.raises(ManifestError, match=reason):
        BundleManifest.from_dict(doc)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_manifest_parser_refuses_a_wrongly_typed_field_naming_it(data):
    assert BundleManifest.from_dict(VALID_MANIFEST).to_dict() == VALID_MANIFEST
    key = data.draw(st.sampled_from(sorted(k for k in VALID_MANIFEST if k != "type")))
    value = data.draw(wrongly_typed(VALID_MANIFEST[key]))
    with pytest.raises(ManifestError, match=f"field '{key}'"):
        BundleManifest.from_dict({**VALID_MANIFEST, key: value})


@settings(max_examples=100, deadline=None)
@given(body=json_values | st.dictionaries(st.text(max_size=12).filter(lambda k: k != "inputs"), json_values,
                                          max_size=6))
def test_oip_decoder_refuses_garbage_naming_what_is_wrong(body):
    reason = "missing field 'inputs'" if isinstance(body, dict) else "inference request must be a JSON object"
    with pytest.raises(MessageError, match=reason):
        oip.decode_request(body)


@settings(max_examples=100, deadline=None)
@given(value=wrongly_typed([]))
def test_oip_decoder_refuses_wrongly_typed_inputs_naming_the_field(value):
    with pytest.raises(MessageError, match="field 'inputs' must be list"):
        oip.decode_request({"inputs": value})


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


def test_desired_state_content_urls_round_trip_and_are_left_out_when_none():
    state = messages.DesiredState("dev-1", 3, "2026-01-01T00:00:00Z", (),
                                  content_urls=("https://cache.example.com/edge", "http://10.0.0.5:8080"))
    assert messages.DesiredState.from_dict(state.to_dict()) == state
    assert "content_urls" not in messages.DesiredState("dev-1", 3, "2026-01-01T00:00:00Z", ()).to_dict()


@pytest.mark.parametrize("urls", [["ftp://cache.example.com"], ["https://cache.example.com/a?b=c"], [7],
                                  ["javascript:alert(1)"], "https://one.example.com",
                                  [f"https://c{i}.example.com" for i in range(messages.MAX_CONTENT_URLS + 1)]])
def test_desired_state_with_content_urls_that_are_not_plain_http_urls_is_refused(urls):
    doc = messages.DesiredState("dev-1", 3, "2026-01-01T00:00:00Z", ()).to_dict()
    with pytest.raises(MessageError, match="content_urls"):
        messages.DesiredState.from_dict({**doc, "content_urls": urls})
