"""The root-chain message is untrusted bytes: its parser and the agent's root keeper refuse anything malformed with
a BadDataError (never another exception) and never move the root of trust on it."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.outbox import Outbox
from edge_agent.root_keeper import RootKeeper
from fleet_protocol import messages
from fleet_protocol.errors import BadDataError
from fleet_protocol.root import make_root, sign_root
from fleet_protocol.signing import SigningKey
from fleet_protocol.timestamps import utc_now

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
ENVELOPE = st.fixed_dictionaries({"signed": st.dictionaries(st.sampled_from(
    ["type", "version", "expires", "root_keys", "root_threshold", "signing_keys"]), JSON), "signatures": JSON})
PAYLOADS = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda doc: json.dumps(doc).encode()),
    st.lists(ENVELOPE | JSON, max_size=4).map(
        lambda roots: json.dumps({"type": "root-chain", "roots": roots}).encode()),
)


@settings(max_examples=300, deadline=None)
@given(PAYLOADS)
def test_root_chain_parser_refuses_malformed_bytes_with_bad_data_only(payload):
    try:
        roots = messages.parse_root_chain(payload)
    except BadDataError:
        return
    assert roots and all(isinstance(root, dict) for root in roots)


def test_root_keeper_moves_only_on_a_verified_chain(tmp_path):
    root_key = SigningKey.generate()
    enrolled = sign_root(make_root(version=1, expires=utc_now() + timedelta(days=30), root_keys=[root_key.public_key],
                                   root_threshold=1, signing_keys=[SigningKey.generate().public_key]), [root_key])
    path = tmp_path / "root.json"
    path.write_text(json.dumps(enrolled))
    outbox = Outbox(tmp_path / "agent.db")
    keeper = RootKeeper(outbox=outbox, enrolled=path)

    @settings(max_examples=300, deadline=None)
    @given(PAYLOADS)
    def check(payload):
        try:
            keeper.receive(payload)
        except BadDataError:
            assert keeper.error is not None and keeper.error["message"]
        assert keeper.version == 1

    try:
        check()
    finally:
        outbox.close()


def test_reported_state_round_trips_the_trust_fields_and_leaves_them_out_when_unset():
    plain = messages.ReportedState("cam-1", 3, "2030-01-01T00:00:00Z", ())
    assert not {"stale", "root_version", "root_error"} & set(plain.to_dict())
    error = {"code": "rollback", "category": "verification", "message": "older root"}
    full = messages.ReportedState("cam-1", 3, "2030-01-01T00:00:00Z", (), stale=True, root_version=2,
                                  root_error=error)
    assert messages.parse_reported_state(messages.encode(full.to_dict())) == full
