"""Answers by class under an A/B split: the label output (or a score per class) counted over every row."""

from __future__ import annotations

import numpy as np

from edgefleet_runtime.answers import MAX_LABEL_CHARS, MAX_LABELS, AnswerCounts, declared_output


def counted(*results: dict) -> tuple[str | None, dict[str, int]]:
    answers = AnswerCounts()
    for outputs in results:
        answers.add(outputs)
    return answers.take()


def test_a_label_output_that_comes_first_counts_every_row_not_the_argmax_of_its_first_row():
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0], np.int64)  # skl2onnx / onnxmltools: label first
    probabilities = np.eye(2, dtype=np.float32)[labels]
    assert counted({"label": labels, "probabilities": probabilities}) == ("label", {"0": 7, "1": 3})


def test_the_label_is_found_after_a_probability_output_and_string_labels_count_as_text():
    outputs = {"probabilities": np.array([[0.9, 0.1], [0.2, 0.8]], np.float32),
               "output_label": np.array([b"cat", b"dog"], dtype=object)}
    assert counted(outputs, outputs) == ("output_label", {"cat": 2, "dog": 2})


def test_without_a_label_each_row_counts_under_the_index_of_its_largest_score():
    logits = np.array([[0.1, 2.0, 0.3], [3.0, 0.0, 0.1], [0.0, 0.1, 0.2], [0.0, 5.0, 1.0]], np.float32)
    assert counted({"logits": logits}) == ("logits", {"1": 2, "0": 1, "2": 1})


def test_a_regressor_with_one_value_per_row_counts_no_classes():
    assert counted({"y": np.array([[0.3], [1.7]], np.float32)}) == (None, {})


def test_free_text_answers_cannot_grow_the_counts_without_bound():
    texts = np.array([f"answer number {i} " + "x" * 200 for i in range(MAX_LABELS + 30)], dtype=object)
    output, counts = counted({"text": texts})
    assert output == "text" and len(counts) == MAX_LABELS + 1 and counts["other"] == 30
    assert max(len(label) for label in counts) == MAX_LABEL_CHARS


def test_a_result_that_cannot_be_read_is_not_counted_and_does_not_raise():
    assert counted({"label": np.array([{"a": 1}], dtype=object)}) == (None, {})


def test_take_starts_the_counts_again():
    answers = AnswerCounts()
    answers.add({"label": np.array([2, 2])})
    assert answers.take() == ("label", {"2": 2})
    assert answers.take() == ("label", {})


def test_a_declared_label_output_counts_by_the_label_even_when_a_probability_output_comes_first():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]], np.float32)
    outputs = {"probabilities": probabilities, "label": np.array([5.0, 6.0, 6.0], np.float32)}  # float: not by rule
    answers = AnswerCounts(declared_output({"answers": {"label_output": "label"}}))
    answers.add(outputs)
    assert answers.take() == ("label", {"5.0": 1, "6.0": 2})


def test_a_declared_probability_output_counts_its_argmax_though_a_label_output_exists():
    outputs = {"label": np.array([0, 0, 0]), "scores": np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3]], np.float32)}
    answers = AnswerCounts(declared_output({"answers": {"probability_output": "scores"}}))
    answers.add(outputs)
    assert answers.take() == ("scores", {"1": 2, "0": 1})


def test_a_result_without_the_declared_output_is_not_counted_by_the_rule_instead():
    answers = AnswerCounts(declared_output({"answers": {"label_output": "label"}}))
    answers.add({"other": np.array([1, 2])})
    assert answers.take() == ("label", {})
