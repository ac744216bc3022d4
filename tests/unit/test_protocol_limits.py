"""Limits every untrusted document meets before and while it is parsed: nesting depth, size, integers."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from hypothesis import given, settings, strategies as st

from fleet_protocol import bundle_file, messages, renewal
from fleet_protocol.canonical import MAX_JSON_DEPTH, json_depth, parse_json_object
from fleet_protocol.errors import ManifestError, MessageError
from fleet_protocol.fields import MAX_INT, count_field, field
from fleet_server.keys import new_signing_key

DEEP = 300_000
DEEP_ARRAY = b"[" * DEEP + b"]" * DEEP
DEEP_OBJECT = b'{"a":' * DEEP + b"1" + b"}" * DEEP

tricky_text = st.text(alphabet='[]{}"\\ab\n', max_size=12)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | tricky_text,
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(tricky_text, children, max_size=3), max_leaves=30)


def nesting(value) -> int:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    return 0


@pytest.mark.parametrize("payload", [DEEP_ARRAY, DEEP_OBJECT], ids=["arrays", "objects"])
def test_json_nested_deeper_than_the_limit_is_refused_before_parsing(payload):
    with pytest.raises(MessageError, match=f"nests arrays and objects {DEEP} deep, more than the 64 allowed") as info:
        parse_json_object(payload, what="desired state", max_bytes=len(payload))
    assert info.value.code == "malformed_message"


def nested_object(depth: int) -> str:
    return '{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def test_json_exactly_at_the_depth_limit_is_parsed_and_one_deeper_is_refused():
    assert nesting(parse_json_object(nested_object(MAX_JSON_DEPTH), what="doc", max_bytes=1000)) == 64
    with pytest.raises(MessageError, match=f"{MAX_JSON_DEPTH + 1} deep"):
        parse_json_object(nested_object(MAX_JSON_DEPTH + 1), what="doc", max_bytes=1000)


def test_brackets_and_escaped_quotes_inside_strings_do_not_count_as_nesting():
    doc = {"a": "[" * 1000 + '\\"{' * 500, "b\\": '"]]]]\\\\' + "{" * 300}
    assert parse_json_object(json.dumps(doc).encode(), what="doc", max_bytes=100_000) == doc


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_json_depth_is_the_nesting_the_parser_sees(value):
    assert json_depth(json.dumps(value).encode()) == nesting(value)


def test_json_larger_than_the_limit_is_refused_before_it_is_decoded():
    with pytest.raises(MessageError, match="is 11 bytes, more than the 10 allowed"):
        parse_json_object(b'{"a":"bcd"}', what="doc", max_bytes=10)


@pytest.mark.parametrize("payload, reason", [
    (b'{"a": "\xff"}', "is not UTF-8 JSON"),
    ('{"a": 1}'.encode("utf-16"), "is not UTF-8 JSON"),
    (b'{"a": ', "is not valid JSON"),
    (b"[1, 2]", "must be a JSON object, got list"),
])
def test_json_that_is_not_one_utf8_object_is_refused_with_the_reason(payload, reason):
    with pytest.raises(MessageError, match=reason):
        parse_json_object(payload, what="doc", max_bytes=1000)


@pytest.mark.parametrize("parse", [messages.parse_desired_envelope, messages.parse_root_chain,
                                   messages.parse_reported_state, messages.parse_telemetry_batch,
                                   messages.parse_device_status, messages.parse_fetch_request],
                         ids=lambda parse: parse.__name__)
def test_every_message_parser_refuses_deep_nesting_as_malformed(parse):
    with pytest.raises(MessageError, match="nests arrays and objects"):
        parse(DEEP_ARRAY)


def test_renewal_messages_refuse_deep_nesting_as_malformed():
    with pytest.raises(MessageError, match="nests arrays and objects"):
        renewal.parse_renew_request(b"[" * 5_000 + b"]" * 5_000)


def test_a_bundle_file_with_a_deeply_nested_manifest_is_refused_as_a_malformed_manifest():
    manifest = bundle_file.build_manifest(module="m", version=1, runtime="onnx", model="model.onnx",
                                          files={"model.onnx": b"x"}, created="2026-01-01T00:00:00Z")
    _, data = bundle_file.pack_bundle(manifest, {"model.onnx": b"x"}, new_signing_key())
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            content = DEEP_ARRAY if member.name == bundle_file.MANIFEST_MEMBER else src.extractfile(member).read()
            member.size = len(content)
            dst.addfile(member, io.BytesIO(content))
    with pytest.raises(ManifestError, match="manifest.json nests arrays and objects") as info:
        bundle_file.read_bundle(out.getvalue(), None)
    assert info.value.code == "malformed_manifest"


# --- integers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2**70, MAX_INT + 1, -MAX_INT - 1, 10**4000],
                         ids=["2^70", "max+1", "min-1", "4001 digits"])
def test_an_integer_outside_the_wire_range_is_refused_naming_the_field(value):
    with pytest.raises(MessageError, match=f"field 'n' must be an integer between -{MAX_INT} and {MAX_INT}"):
        field({"n": value}, "n", int, where="doc")


def test_integers_at_the_wire_range_bounds_are_accepted():
    assert count_field({"n": MAX_INT}, "n", where="doc") == MAX_INT
    assert field({"n": -MAX_INT}, "n", int, where="doc") == -MAX_INT


def test_a_telemetry_sequence_number_of_2_to_the_70_is_refused_as_malformed():
    record = {"seq": 2**70, "ts": "2026-01-01T00:00:00Z", "kind": "inference", "data": {}}
    payload = messages.encode({"type": "telemetry-batch", "device_id": "cam-1", "outbox_id": "ob",
                               "records": [record]})
    with pytest.raises(MessageError, match="telemetry batch record: field 'seq' must be an integer between"):
        messages.parse_telemetry_batch(payload)


def test_a_desired_state_generation_past_the_wire_range_is_refused():
    doc = {"type": "desired-state", "device_id": "cam-1", "generation": 2**63, "issued": "x", "modules": []}
    with pytest.raises(MessageError, match="field 'generation' must be an integer between"):
        messages.DesiredState.from_dict(doc)
