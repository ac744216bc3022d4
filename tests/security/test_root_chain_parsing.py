"""The root-chain message is untrusted bytes: its parser and the agent's root keeper refuse anything malformed with
a BadDataError (never another exception), never move the root of trust on it, and never let it clear a refusal."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.outbox import Outbox
from edge_agent.root_keeper import RootKeeper
from fleet_protocol import messages
from fleet_protocol.errors import BadDataError, EdgefleetError
from fleet_protocol.root import make_root, sign_root
from fleet_protocol.signing import SigningKey
from fleet_server.clock import utc_now
from fleet_server.keys import new_signing_key

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
    root_key = new_signing_key()
    enrolled = sign_root(make_root(version=1, expires=utc_now() + timedelta(days=30), root_keys=[root_key.public_key],
                                   root_threshold=1, signing_keys=[new_signing_key().public_key]), [root_key])
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


def _root(version: int, root_keys: list[SigningKey], signing: SigningKey, signers: list[SigningKey]) -> dict:
    return sign_root(make_root(version=version, expires=utc_now() + timedelta(days=30),
                               root_keys=[k.public_key for k in root_keys], root_threshold=1,
                               signing_keys=[signing.public_key]), signers)


def test_unverified_root_chain_never_clears_a_reported_refusal(tmp_path):
    """Only a verified newer root clears ``root_error``; the held root again is a no-op that keeps it, and a
    root claiming the held version with other bytes (unverified) is refused."""
    root_key, next_key, attacker = new_signing_key(), new_signing_key(), new_signing_key()
    held = _root(1, [root_key], new_signing_key(), [root_key])
    path = tmp_path / "root.json"
    path.write_text(json.dumps(held))
    outbox = Outbox(tmp_path / "agent.db")
    keeper = RootKeeper(outbox=outbox, enrolled=path)

    def receive(roots: list[dict]) -> str | bool:
        try:
            return keeper.receive(messages.encode_root_chain(roots))
        except EdgefleetError as exc:
            return exc.code

    try:
        assert receive([held]) is False and keeper.error is None  # the retained chain again: nothing to do
        forged = _root(2, [attacker], attacker, [attacker])
        assert receive([held, forged]) == "bad_signature"
        refusal = keeper.error
        assert refusal["code"] == "bad_signature"
        # The held root byte for byte (a replay of the retained chain): a no-op that leaves the refusal reported.
        assert receive([held]) is False and keeper.error == refusal
        # A version-1 root with other bytes, never verified: refused (it used to read as "nothing newer").
        same_version = [_root(1, [attacker], attacker, [attacker]),
                        {"signed": held["signed"], "signatures": []},
                        {"signed": {**held["signed"], "signing_keys": [attacker.public_key.to_hex()]},
                         "signatures": held["signatures"]}]
        for envelope in same_version:
            assert receive([envelope]) == "root_conflict"
            assert keeper.error is not None and keeper.version == 1
        assert receive([held]) is False and keeper.error["code"] == "root_conflict"
        # A newer root signed by the held root's keys and its own: trusted, and only now is the refusal cleared.
        newer = _root(2, [next_key], new_signing_key(), [root_key, next_key])
        assert receive([held, newer]) is True
        assert keeper.version == 2 and keeper.error is None
        assert receive([held, newer]) is False and keeper.error is None
    finally:
        outbox.close()


def test_reported_state_round_trips_the_trust_fields_and_leaves_them_out_when_unset():
    plain = messages.ReportedState("cam-1", 3, "2030-01-01T00:00:00Z", ())
    assert not {"stale", "root_version", "root_error"} & set(plain.to_dict())
    error = {"code": "rollback", "category": "verification", "message": "older root"}
    full = messages.ReportedState("cam-1", 3, "2030-01-01T00:00:00Z", (), stale=True, root_version=2,
                                  root_error=error)
    assert messages.parse_reported_state(messages.encode(full.to_dict())) == full
