"""The agent's memory of scored requests for labels: bounded, oldest forgotten first, one record per request id,
and labels checked before anything is joined."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edge_agent.feedback_route import FeedbackRoute
from edgefleet_runtime.answers import AnswerCounts, declared_class_names, declared_output
from edgefleet_runtime.feedback import RecentRequests, UnknownRequest, new_request_id, receive
from fleet_protocol import feedback
from fleet_protocol.errors import BadDataError, MessageError


def remember(recent: RecentRequests, request_id: str, predicted: list[str] | None, model: str = "iris") -> None:
    classes = None if predicted is None else np.array(predicted)
    recent.remember(request_id, model=model, version=3, scored_on="local", split=True, classes=classes)


def test_the_oldest_request_is_forgotten_past_the_bound_and_its_label_is_refused_naming_the_bound():
    recent = RecentRequests(max_requests=3, max_rows=100)
    for i in range(4):
        remember(recent, f"r{i}", ["a"])
    assert len(recent) == 3
    bound = r"never scored here, scored before a restart, or forgotten \(the last 3 requests, 100 rows in all"
    with pytest.raises(UnknownRequest, match=bound):
        recent.join("iris", "r0", ["a"])
    scored, _, record = recent.join("iris", "r3", ["a"])
    assert record["pairs"] == [["a", "a"]] and scored.version == 3


def test_the_row_bound_forgets_old_requests_too():
    recent = RecentRequests(max_requests=100, max_rows=5)
    remember(recent, "old", ["a", "b", "c"])
    remember(recent, "new", ["a", "b", "c"])
    with pytest.raises(UnknownRequest):
        recent.join("iris", "old", ["a", "b", "c"])
    assert recent.join("iris", "new", ["a", "b", "c"])[2] is not None


def test_a_second_label_for_the_same_request_yields_no_record():
    recent = RecentRequests()
    remember(recent, "r1", ["a", "b"])
    written = []
    first = receive(recent, written.append, "iris", {"id": "r1", "labels": ["a", "a"]})
    second = receive(recent, written.append, "iris", {"id": "r1", "labels": ["b", "b"]})
    assert (first["correct"], first["duplicate"], second["duplicate"]) == (1, False, True)
    assert len(written) == 1 and feedback.parse_record(written[0]) == written[0]


def test_a_label_for_an_id_the_client_used_again_is_a_duplicate_as_the_server_counts_it():
    recent = RecentRequests()
    written = []
    remember(recent, "r1", ["a"])
    assert receive(recent, written.append, "iris", {"id": "r1", "labels": ["a"]})["duplicate"] is False
    remember(recent, "r1", ["b"])  # a new request with the same id: the server keeps one label per id
    assert receive(recent, written.append, "iris", {"id": "r1", "labels": ["b"]})["duplicate"] is True
    remember(recent, "r1", ["c"], model="other")  # another model's request: a label of its own
    assert receive(recent, written.append, "other", {"id": "r1", "labels": ["c"]})["duplicate"] is False
    assert [record["model"] for record in written] == ["iris", "other"]


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


def test_the_class_joined_is_the_one_answered_even_when_the_module_reuses_its_output_array():
    buffer = np.array([2, 0], dtype=np.int64)  # an entry script answering from a buffer it fills again
    recent = RecentRequests()
    recent.remember("r1", model="iris", version=1, scored_on="local", split=False,
                    classes=AnswerCounts(("label", "label")).classes({"label": buffer}))
    buffer[:] = 1
    assert recent.join("iris", "r1", ["2", "2"])[1] == ["2", "0"]


@pytest.mark.parametrize("outputs", [
    {"label": np.array([b"setosa", b"virginica", b"setosa"]), "probabilities": np.zeros((3, 3), np.float32)},
    {"label": np.array([[1], [2], [1]], np.int64)},
    {"logits": np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.0, 0.2, 0.7]], np.float32)},
])
def test_a_joined_request_predicts_the_classes_the_answers_count(outputs):
    counted = AnswerCounts()
    counted.add(outputs)
    recent = RecentRequests()
    recent.remember("r1", model="iris", version=1, scored_on="local", split=True,
                    classes=AnswerCounts().classes(outputs))
    _, predicted, record = recent.join("iris", "r1", ["1", "1", "1"])
    assert {label: predicted.count(label) for label in predicted} == counted.counts
    assert [pair[0] for pair in feedback.parse_record(record)["pairs"]] == predicted


IRIS = ("setosa", "versicolor", "virginica")


def test_a_duplicate_label_answers_what_was_stored_not_a_recount_of_the_labels_it_sent():
    recent = RecentRequests()
    recent.remember("order-1", model="iris", version=1, scored_on="local", split=False,
                    classes=np.array([0, 2], np.int64), class_names=IRIS)
    written = []
    first = receive(recent, written.append, "iris", {"id": "order-1", "labels": [0, 2]})
    again = receive(recent, written.append, "iris", {"id": "order-1", "labels": [1, 1]})
    assert (first["correct"], first["duplicate"]) == (2, False)
    assert (again["correct"], again["rows"], again["duplicate"]) == (2, 2, True)
    assert len(written) == 1


def test_a_class_name_is_stored_as_its_index_when_the_module_declares_its_class_names():
    recent = RecentRequests()
    recent.remember("order-1", model="iris", version=1, scored_on="local", split=False,
                    classes=np.array([0, 2], np.int64), class_names=IRIS)
    written = []
    answer = receive(recent, written.append, "iris", {"id": "order-1", "labels": ["setosa", "virginica"]})
    assert (answer["correct"], answer["duplicate"]) == (2, False)
    assert written[0]["pairs"] == [["0", "0"], ["2", "2"]]


@pytest.mark.parametrize(("class_names", "labels", "message"), [
    (IRIS, ["setosa", "rose"], r"labels\[1\] is 'rose', not a class of model 'iris': send each label as the index "
                               r"or the name of its class \(0 = setosa, 1 = versicolor, 2 = virginica\)"),
    (IRIS, [0, 3], r"labels\[1\] is '3', not a class of model 'iris'.*0 = setosa"),
    (None, ["setosa", "virginica"], r"labels\[0\] is 'setosa', not a class index: model 'iris' answers class "
                                    r"indices \(0, 1, ...\).*declares no class names \(config.answers.class_names\)"),
])
def test_a_label_not_in_the_form_the_model_answers_is_refused_naming_the_form_and_the_classes(class_names, labels,
                                                                                              message):
    recent = RecentRequests()
    recent.remember("order-1", model="iris", version=1, scored_on="local", split=False,
                    classes=np.array([0, 2], np.int64), class_names=class_names)
    written = []
    with pytest.raises(MessageError, match=message):
        receive(recent, written.append, "iris", {"id": "order-1", "labels": labels})
    assert written == []
    assert receive(recent, written.append, "iris", {"id": "order-1", "labels": [0, 2]})["duplicate"] is False


def test_class_names_are_declared_beside_the_answer_output_and_checked():
    config = {"answers": {"label_output": "label", "class_names": list(IRIS)}}
    assert declared_output(config) == ("label", "label") and declared_class_names(config) == IRIS
    assert declared_output({"answers": {"class_names": ["cat", "dog"]}}) is None
    for bad in (["cat"], ["cat", "cat"], ["0", "dog"], "cat,dog"):
        with pytest.raises(BadDataError, match="class_names must list the name of each class index"):
            declared_output({"answers": {"class_names": bad}})


def test_assigned_request_ids_are_unique_and_never_repeat_after_a_restart():
    assert len({new_request_id() for _ in range(10_000)}) == 10_000
    code = "from edgefleet_runtime.feedback import new_request_id; print(new_request_id())"
    first, second = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
                     for _ in range(2))
    assert first.strip() and first != second, "a restarted agent must not assign the ids of the one before"


class _Outbox:
    def __init__(self):
        self.full, self.records = True, []

    def add(self, kind: str, data: dict) -> int:
        if self.full:
            raise OSError("database or disk is full")
        self.records.append((kind, data))
        return len(self.records)


def test_the_feedback_route_answers_503_with_retry_after_when_the_outbox_refuses_and_joins_the_label_later():
    outbox = _Outbox()
    route = FeedbackRoute(RecentRequests(), outbox)
    route.recent.remember("r1", model="iris", version=2, scored_on="local", split=False, classes=np.array([1]))
    status, body, headers = route.post("iris", {"id": "r1", "labels": [1]})
    assert (status, headers) == (503, {"Retry-After": "5"}) and "disk is full" in body["error"]
    outbox.full = False
    assert route.post("iris", {"id": "r1", "labels": [1]}) == (200, {
        "id": "r1", "model_name": "iris", "model_version": "2", "rows": 1, "correct": 1, "duplicate": False})
    assert [kind for kind, _ in outbox.records] == [feedback.KIND]
    assert route.post("iris", {"id": "r2", "labels": [1]})[0] == 404
    assert route.post("iris", {"id": "r1", "labels": [0.5]})[0] == 400


def test_feedback_is_off_when_a_bound_is_zero():
    assert FeedbackRoute.create(max_requests=0, max_rows=10, outbox=_Outbox()) is None
    assert FeedbackRoute.create(max_requests=10, max_rows=0, outbox=_Outbox()) is None


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
