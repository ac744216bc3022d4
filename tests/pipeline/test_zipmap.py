"""Item 5: a classifier converted with ZipMap (probabilities as a sequence of maps) is refused at registration."""

from __future__ import annotations

from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression


def converted(iris, *, zipmap: bool) -> bytes:
    x, y = iris
    clf = LogisticRegression(max_iter=500).fit(x, y)
    options = {} if zipmap else {id(clf): {"zipmap": False}}
    return to_onnx(clf, x[:1], options=options).SerializeToString()


def test_classifier_converted_with_zipmap_is_refused_with_how_to_convert_without_it(api, iris):
    response = api.post("/api/models/clf", files={"file": ("clf.onnx", converted(iris, zipmap=True))})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "output 'output_probability' is a ZipMap" in detail and "BYTES string of a dict" in detail
    assert 'options={id(clf): {"zipmap": False}}' in detail and "--convert" in detail
    assert api.get("/api/models/clf").status_code == 404

    plain = api.post("/api/models/clf", files={"file": ("clf.onnx", converted(iris, zipmap=False))})
    assert plain.status_code == 201, plain.text
    assert [o["datatype"] for o in plain.json()["outputs"]] == ["INT64", "FP32"]


def test_the_servers_own_convert_path_turns_zipmap_off(api, forest_pickle):
    response = api.post("/api/models/forest/from-sklearn", files={"file": ("m.pkl", forest_pickle)})
    assert response.status_code == 201, response.text
    assert [o["datatype"] for o in response.json()["outputs"]] == ["INT64", "FP32"]
