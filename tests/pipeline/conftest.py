"""Fixtures for the model pipeline tests: the server API (TestClient) and small real models and samples."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from tests.server.conftest import ADMIN_TOKEN, api, config, fleet, register  # noqa: F401 - fixtures reused

__all__ = ["ADMIN_TOKEN", "npy", "register"]


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def iris():
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


@pytest.fixture(scope="session")
def mlp_pickle(iris) -> bytes:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = iris
    model = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=600, random_state=0))
    return pickle.dumps(model.fit(x, y))


@pytest.fixture(scope="session")
def forest_pickle(iris) -> bytes:
    from sklearn.ensemble import RandomForestClassifier

    x, y = iris
    return pickle.dumps(RandomForestClassifier(n_estimators=10, random_state=0).fit(x, y))
