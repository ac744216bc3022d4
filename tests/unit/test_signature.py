"""A module's signature: parsed strictly, checked against its model, compared with an entry script's answer."""

from __future__ import annotations

import numpy as np
import pytest

from fleet_protocol.errors import ManifestError
from fleet_protocol.signature import Signature, SignatureMismatch, check_against_model

MODEL_IN = [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
MODEL_OUT = [{"name": "label", "datatype": "INT64", "shape": [-1]},
             {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]


def signature(inputs=MODEL_IN, outputs=MODEL_OUT) -> Signature:
    return Signature.from_dict({"inputs": inputs, "outputs": outputs}, where="module.json: signature",
                               error=ManifestError)


def with_class_name() -> Signature:
    return signature(outputs=[*MODEL_OUT, {"name": "class_name", "datatype": "BYTES", "shape": [-1]}])


@pytest.mark.parametrize(("doc", "words"), [
    ({"inputs": MODEL_IN, "outptus": MODEL_OUT}, "unknown field 'outptus' (did you mean 'outputs'?"),
    ({"inputs": [{"name": "x", "datatype": "FLOAT", "shape": [4]}], "outputs": MODEL_OUT},
     "datatype 'FLOAT' is not one of"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [None, 4]}], "outputs": MODEL_OUT},
     "each a size or -1 (free)"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-2, 4]}], "outputs": MODEL_OUT},
     "each a size or -1 (free)"),
    ({"inputs": [*MODEL_IN, *MODEL_IN], "outputs": MODEL_OUT}, "'x' is listed twice"),
    ({"inputs": [], "outputs": MODEL_OUT}, "'inputs' must list between 1 and 64 tensors"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "dims": 1}], "outputs": MODEL_OUT},
     "unknown field 'dims'"),
], ids=["key typo", "datatype", "null dim", "negative dim", "twice", "empty", "tensor key"])
def test_a_malformed_signature_is_refused_naming_the_field(doc, words):
    with pytest.raises(ManifestError) as refused:
        Signature.from_dict(doc, where="module.json: signature", error=ManifestError)
    assert str(refused.value).startswith("module.json: signature") and words in str(refused.value)


def test_a_signature_reads_back_as_written():
    sig = with_class_name()
    assert signature(**sig.to_dict()) == sig
    assert sig.input_specs() == [("x", "FP32", [-1, 4])]


@pytest.mark.parametrize(("sig", "has_entry", "words"), [
    (with_class_name(), False, "the model has no output 'class_name'"),
    (signature(outputs=MODEL_OUT[:1]), False, "the model's output 'probabilities' FP32 [-1, 3] is not declared"),
    (signature(inputs=[{"name": "x", "datatype": "FP64", "shape": [-1, 4]}]), False,
     "input 'x' FP64 [-1, 4] disagrees with the model's 'x' FP32 [-1, 4]: datatype FP64 is not FP32"),
    (signature(inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]), True,
     "dimension 1 is 3, the model's is 4"),
    (signature(outputs=[{"name": "label", "datatype": "INT64", "shape": [-1, 1]}]), True,
     "2 dimensions, the model has 1"),
    (signature(outputs=[{"name": "label", "datatype": "BYTES", "shape": [-1]}]), True, "datatype BYTES is not INT64"),
], ids=["undeclared by the model", "model output left out", "input datatype", "feature dim", "rank",
        "script renames a type"])
def test_a_signature_that_disagrees_with_the_model_is_refused(sig, has_entry, words):
    with pytest.raises(SignatureMismatch) as refused:
        check_against_model(sig, inputs=MODEL_IN, outputs=MODEL_OUT, has_entry=has_entry)
    assert words in str(refused.value)


def test_an_entry_script_declares_its_own_outputs_and_may_take_a_batch_its_model_cannot():
    one_row = [{"name": "x", "datatype": "FP32", "shape": [1, 4]}]
    check_against_model(with_class_name(), inputs=one_row, outputs=MODEL_OUT, has_entry=True)
    check_against_model(signature(outputs=MODEL_OUT[1:]), inputs=MODEL_IN, outputs=MODEL_OUT, has_entry=True)
    with pytest.raises(SignatureMismatch, match="dimension 0 is -1, the model's is 1"):  # the model answers alone
        check_against_model(signature(), inputs=one_row, outputs=MODEL_OUT, has_entry=False)


def test_an_answer_is_compared_with_the_declared_outputs():
    sig = with_class_name()
    answer = {"label": np.array([0, 2]), "probabilities": np.zeros((2, 3), np.float32),
              "class_name": np.array(["setosa", "virginica"], dtype=object)}
    assert sig.output_problem(answer) is None
    assert "output 'class_name' BYTES [-1] is declared but missing" in sig.output_problem(
        {k: v for k, v in answer.items() if k != "class_name"})
    assert "output 'extra' is not declared" in sig.output_problem({**answer, "extra": np.zeros(2)})
    assert sig.output_problem({**answer, "label": np.array([0.0, 2.0])}) == \
        "output 'label' is FP64 [2], declared 'label' INT64 [-1]"
    assert "is FP32 [2, 4]" in sig.output_problem({**answer, "probabilities": np.zeros((2, 4), np.float32)})
