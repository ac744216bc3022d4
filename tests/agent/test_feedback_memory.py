"""The agent's memory of scored requests for labels: bounded, oldest forgotten first, one record per request id,
and labels checked before anything is joined."""

from __future__ import annotations

import pytest

from edge_agent.feedback import RecentRequests, UnknownRequest, receive
from fleet_protocol import feedback
from fleet_protocol.errors import MessageError


def remember(recent: RecentRequests, request_id: str, predicted: list[str], model: str = "iris") -> None:
    recent.remember(request_id, model=model, version=3, scored_on="local", split=True, predicted=predicted)


def test_the_oldest_request_is_forgotten_past_the_bound_and_its_label_is_refused_naming_the_bound():
    recent = RecentRequests(max_requests=3, max_rows=100)
    for i in range(4):
        remember(recent, f"r{i}", ["a"])
    assert len(recent) == 3
    with pytest.raises(UnknownRequest, match=r"the last 3 requests \(100 rows in all\)"):
        recent.join("iris", "r0", ["a"])
    scored, record = recent.join("iris", "r3", ["a"])
    assert record["pairs"] == [["a", "a"]] and scored.version == 3


def test_the_row_bound_forgets_old_requests_too():
    recent = RecentRequests(max_requests=100, max_rows=5)
    remember(recent, "old", ["a", "b", "c"])
    remember(recent, "new", ["a", "b", "c"])
    with pytest.raises(UnknownRequest):
        recent.join("iris", "old", ["a", "b", "c"])
    assert recent.join("iris", "new", ["a", "b", "c"])[1] is not None


def test_a_second_label_for_the_same_request_yields_no_record():
    recent = RecentRequests()
    remember(recent, "r1", ["a", "b"])
    written = []
    first = receive(recent, written.append, "iris", {"id": "r1", "labels": ["a", "a"]})
    second = receive(recent, written.append, "iris", {"id": "r1", "labels": ["b", "b"]})
    assert (first["correct"], first["duplicate"], second["duplicate"]) == (1, False, True)
    assert len(written) == 1 and feedback.parse_record(written[0]) == written[0]


def test_a_label_the_outbox_cannot_store_is_refused_and_can_be_sent_again():
    recent = RecentRequests()
    remember(recent, "r1", ["a"])

    def full(record):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        receive(recent, full, "iris", {"id": "r1", "labels": ["a"]})
    written = []
    assert receive(recent, written.append, "iris", {"id": "r1", "labels": ["a"]})["duplicate"] is False
    assert len(written) == 1


def test_labels_for_another_model_or_with_the_wrong_row_count_are_refused():
    recent = RecentRequests()
    remember(recent, "r1", ["a", "b"])
    with pytest.raises(UnknownRequest):
        recent.join("other", "r1", ["a", "b"])
    with pytest.raises(MessageError, match="had 2 row"):
        recent.join("iris", "r1", ["a"])


def test_requests_without_classes_or_with_too_many_rows_are_not_remembered():
    recent = RecentRequests()
    remember(recent, "none", None)
    remember(recent, "huge", ["a"] * (feedback.MAX_ROWS + 1))
    assert len(recent) == 0
    assert not RecentRequests(max_requests=0).enabled


@pytest.mark.parametrize("body, reason", [
    ({"labels": ["a"]}, "'id'"),
    ({"id": "", "labels": ["a"]}, "'id'"),
    ({"id": "x" * 129, "labels": ["a"]}, "'id'"),
    ({"id": "r1", "labels": []}, "one label per row"),
    ({"id": "r1", "labels": ["a"] * (feedback.MAX_ROWS + 1)}, "one label per row"),
    ({"id": "r1", "labels": [1.5]}, r"labels\[0\]"),
    ({"id": "r1", "labels": [True]}, r"labels\[0\]"),
    ({"id": "r1", "labels": ["x" * 65]}, r"labels\[0\] must be 1..64"),
    ({"id": "r1", "labels": ["a"], "label": "a"}, "label"),
])
def test_bad_feedback_is_refused_with_the_reason(body, reason):
    with pytest.raises(MessageError, match=reason):
        feedback.parse_request(body)


def test_integer_labels_count_as_their_decimal_text():
    assert feedback.parse_request({"id": "r1", "labels": [0, 12, "setosa"]}) == ("r1", ["0", "12", "setosa"])


@pytest.mark.parametrize("change", [
    {"pairs": [["a"]]}, {"pairs": []}, {"scored_on": "moon"}, {"version": 0}, {"split": 1}, {"extra": 1},
    {"pairs": [["a", "x" * 65]]}, {"model": "Bad Name"},
])
def test_a_malformed_feedback_record_is_refused(change):
    good = feedback.encode_record(model="iris", version=2, request_id="r1", scored_on="local", split=True,
                                  predicted=["a"], labels=["b"])
    assert feedback.parse_record(dict(good)) == good
    with pytest.raises(MessageError):
        feedback.parse_record({**good, **change})
