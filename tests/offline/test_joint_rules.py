"""Joint inference, the pure rules: the policy keys, which rows are hard, how the cloud's rows go in, the marks."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent import joint
from edgefleet_runtime.fallback import FallbackPolicy
from fleet_protocol.errors import MessageError

ANSWERS = {"answers": {"probability_output": "probabilities"}}


def policy(fallback: dict, **config) -> FallbackPolicy:
    return FallbackPolicy.from_configs({**ANSWERS, **config, "fallback": fallback})


def test_confidence_below_is_read_as_a_probability_and_cloud_model_answers_the_hard_rows():
    joint_policy = policy({"confidence_below": "0.75", "cloud_model": "forest", "target": "other"})
    assert (joint_policy.confidence_below, joint_policy.joint_model) == (0.75, "forest")
    assert policy({"confidence_below": ".6", "target": "forest"}).joint_model == "forest", "target when left out"
    assert FallbackPolicy().joint_model is None


@pytest.mark.parametrize("value", ["0", "1", "1.0", "0.0", "-0.5", "0.5x", "٠.5", "0.1234567", 1, True, None])
def test_confidence_below_outside_zero_to_one_or_not_a_decimal_string_is_refused(value):
    if value is None:  # null means no joint inference: allowed, and then cloud_model is refused
        with pytest.raises(MessageError, match="cloud_model is only asked"):
            policy({"confidence_below": None, "cloud_model": "forest"})
        return
    with pytest.raises(MessageError, match="confidence_below must be a probability between 0 and 1"):
        policy({"confidence_below": value, "cloud_model": "forest"})


def test_a_float_threshold_is_refused_with_the_string_to_write_instead():
    with pytest.raises(MessageError, match='write it as the string "0.8": signed documents hold no floats'):
        policy({"confidence_below": 0.8, "cloud_model": "forest"})


def test_confidence_below_needs_a_declared_probability_output():
    with pytest.raises(MessageError, match="needs the module's probability output"):
        FallbackPolicy.from_configs({"fallback": {"confidence_below": "0.8", "cloud_model": "forest"}})
    with pytest.raises(MessageError, match="needs the module's probability output"):
        FallbackPolicy.from_configs({"answers": {"label_output": "label"},
                                     "fallback": {"confidence_below": "0.8", "cloud_model": "forest"}})


def test_confidence_below_needs_a_model_to_ask():
    with pytest.raises(MessageError, match="needs a bigger model to ask: set fallback.cloud_model"):
        policy({"confidence_below": "0.8"})


def test_cloud_model_without_confidence_below_is_refused():
    with pytest.raises(MessageError, match="cloud_model is only asked about rows below"):
        policy({"cloud_model": "forest"})


def test_a_desired_state_override_may_lower_the_threshold_of_the_manifest():
    config = {**ANSWERS, "fallback": {"confidence_below": "0.8", "cloud_model": "forest"}}
    assert FallbackPolicy.from_configs(config, {"confidence_below": "0.5"}).confidence_below == 0.5


def test_a_desired_state_override_of_a_null_threshold_switches_joint_inference_off():
    config = {**ANSWERS, "fallback": {"confidence_below": "0.8", "cloud_model": "forest"}}
    assert FallbackPolicy.from_configs(config, {"confidence_below": None}).joint_model is None
    with pytest.raises(MessageError, match="desired state: fallback.cloud_model is only asked"):
        FallbackPolicy.from_configs(config, {"confidence_below": None, "cloud_model": "bigger"})


def test_a_misspelt_joint_key_is_refused_naming_the_nearest_valid_key():
    with pytest.raises(MessageError, match="'confidence_bellow'.*'confidence_below'"):
        policy({"confidence_bellow": "0.8", "cloud_model": "forest"})


PROBABILITIES = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.6, 0.3, 0.1], [0.2, 0.79, 0.01]], np.float32)


def test_only_rows_whose_largest_probability_is_below_the_threshold_are_hard():
    outputs = {"label": np.array([0, 0, 0, 1]), "probabilities": PROBABILITIES}
    assert joint.hard_rows(outputs, "probabilities", 0.8)[0].tolist() == [1, 2, 3]
    assert joint.hard_rows(outputs, "probabilities", 0.6)[0].tolist() == [1], "0.6 itself is not below 0.6"
    assert joint.hard_rows(outputs, "missing", 0.8)[0].tolist() == [], "an output the answer lacks: nothing to compare"
    assert joint.hard_rows({"probabilities": np.array([1, 2])}, "probabilities", 0.8)[0].tolist() == []


def test_only_the_hard_rows_of_each_input_go_to_the_cloud():
    inputs = {"x": np.arange(12, dtype=np.float32).reshape(4, 3), "scale": np.array(2.0, np.float32)}
    sent = joint.take_rows(inputs, np.array([1, 3]), 4)
    assert sent["x"].tolist() == [[3, 4, 5], [9, 10, 11]] and sent["scale"] == 2.0


def test_the_cloud_answer_replaces_the_hard_rows_and_no_other():
    local = {"label": np.array([0, 0, 0, 1], np.int64), "probabilities": PROBABILITIES,
             "name": np.array(["a", "a", "a", "b"], dtype=object)}
    cloud = {"label": np.array([2, 1], np.int64), "probabilities": np.array([[0, .1, .9], [0, .95, .05]], np.float32),
             "name": np.array([b"c", b"b"], dtype=object), "extra": np.zeros(2)}
    merged = joint.merge(local, cloud, np.array([1, 3]), 4)
    assert merged["label"].tolist() == [0, 2, 0, 1]
    np.testing.assert_array_equal(merged["probabilities"][[0, 2]], PROBABILITIES[[0, 2]])
    np.testing.assert_array_equal(merged["probabilities"][[1, 3]], cloud["probabilities"])
    assert merged["label"].dtype == np.int64 and sorted(merged) == ["label", "name", "probabilities"]
    assert local["label"].tolist() == [0, 0, 0, 1], "the local answer itself is left as it was"


@pytest.mark.parametrize("cloud, problem", [
    ({"label": np.array([2, 1])}, "has no output 'probabilities'"),
    ({"label": np.array([2, 1]), "probabilities": np.zeros((2, 4), np.float32)}, "shape \\[2, 4\\]"),
    ({"label": np.array([2.0, 1.0]), "probabilities": np.zeros((2, 3), np.float32)}, "float64"),
])
def test_a_cloud_answer_that_cannot_stand_in_for_the_local_rows_is_refused(cloud, problem):
    local = {"label": np.array([0, 0, 0, 1], np.int64), "probabilities": PROBABILITIES}
    with pytest.raises(MessageError, match=problem):
        joint.merge(local, cloud, np.array([1, 3]), 4)


def test_marks_say_per_row_where_each_answer_came_from():
    assert joint.marks(rows=4, hard=np.array([], np.intp), answered=True) == {}
    some = joint.marks(rows=4, hard=np.array([1, 3]), answered=True, cloud_model="forest", cloud_version="2")
    assert some == {"scored_on": "joint", "fallback_reason": "low_confidence", "cloud_rows": "1,3",
                    "cloud_model": "forest", "cloud_model_version": "2"}
    assert joint.marks(rows=2, hard=np.array([0, 1]), answered=True)["scored_on"] == "cloud"
    kept = joint.marks(rows=4, hard=np.array([1, 3]), answered=False)
    assert kept == {"scored_on": "local", "fallback_reason": "low_confidence", "low_confidence": True,
                    "low_confidence_rows": "1,3"}


def test_a_signed_bundle_with_confidence_below_but_no_probability_output_fails_to_load(tmp_path):
    from edge_agent.installer import Installer
    from edgefleet_runtime.runtime import LoadError, Runtime
    from firmware_profiles import load_profile
    from fleet_server.keys import new_signing_key
    from tests.agent.helpers import make_bundle, stage

    bundle = make_bundle(new_signing_key(), config={"fallback": {"confidence_below": "0.8", "cloud_model": "big"}})
    stage(tmp_path, bundle)  # signed by hand: the server would have refused it at build
    with pytest.raises(LoadError, match="needs the module's probability output") as refused:
        Runtime(load_profile("generic-cpu")).load(Installer(tmp_path).install(bundle.manifest, bundle.envelope))
    assert refused.value.code == "bad_fallback_policy"


def test_a_row_whose_probabilities_are_not_numbers_is_hard():
    probabilities = np.array([[0.9, 0.1], [np.nan, np.nan], [0.3, np.nan]], np.float32)
    hard, rows = joint.hard_rows({"probabilities": probabilities}, "probabilities", 0.8)
    assert (hard.tolist(), rows) == ([1, 2], 3)


def test_inputs_without_one_row_per_answer_row_are_refused_unless_every_row_is_hard():
    image = np.zeros((8, 8), np.float32)  # one unbatched sample, scored into one row by an entry script
    assert joint.take_rows({"image": image}, np.array([0]), 1)["image"].shape == (8, 8), "every row hard: sent whole"
    with pytest.raises(MessageError, match="input 'x' has 2 rows and the answer 3"):
        joint.take_rows({"x": np.zeros((2, 4), np.float32)}, np.array([2]), 3)


def test_when_every_row_is_hard_the_cloud_answer_replaces_the_local_one_whole():
    local = {"probabilities": np.array([[0.5, 0.5]], np.float32), "count": np.array(1, np.int64)}
    cloud = {"probabilities": np.array([[0.1, 0.9]], np.float32), "count": np.array(7, np.int64)}
    merged = joint.merge(local, cloud, np.array([0]), 1)
    assert merged["count"] == 7 and merged["probabilities"].tolist() == [[np.float32(0.1), np.float32(0.9)]]
    with pytest.raises(MessageError, match="output 'count' has shape \\[\\], not one row per row"):
        joint.merge({**local, "probabilities": np.zeros((2, 2), np.float32)},
                    {**cloud, "probabilities": np.zeros((1, 2), np.float32)}, np.array([1]), 2)


def test_a_cloud_label_longer_than_the_local_labels_is_not_cut():
    local = {"label": np.array(["cat", "dog", "cat"])}  # an entry script's fixed-width strings
    merged = joint.merge(local, {"label": np.array(["horse"], dtype=object)}, np.array([1]), 3)
    assert merged["label"].tolist() == ["cat", "horse", "cat"]


def test_every_in_process_result_has_parameters_empty_when_no_row_was_hard():
    from edge_agent.offload import JointScoreResult
    from edgefleet_runtime.runtime import ScoreResult

    sure = ScoreResult({"probabilities": PROBABILITIES[:1]}, "regression", 1, "CPUExecutionProvider")
    assert dict(sure.parameters) == {} and sure.scored_on == "local"
    marks = joint.marks(rows=1, hard=np.array([0]), answered=False)
    assert JointScoreResult(sure, sure.outputs, marks).parameters["low_confidence"] is True
