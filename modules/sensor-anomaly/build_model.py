"""Rebuild model.tflite: a two-layer network scoring motor sensor readings, without TensorFlow.

    python modules/sensor-anomaly/build_model.py

The weights come from a small numpy fit (plain gradient descent, fixed seed)
on synthetic readings of an electric motor: normal operation plus five fault
modes. The standardisation of the inputs is folded into the first layer, so
the model takes raw readings. The network is

    sensor_readings [1, 8] -> FULLY_CONNECTED (16) -> RELU
                           -> FULLY_CONNECTED (1)  -> LOGISTIC -> anomaly_score [1, 1]

and the .tflite flatbuffer is written directly with the ``flatbuffers``
package against the TFLite schema that ``ai_edge_litert`` ships
(``ai_edge_litert.schema_py_generated``). Needs numpy, flatbuffers and
ai-edge-litert only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MODEL_FILE = Path(__file__).resolve().parent / "model.tflite"
SEED = 20_241_123
HIDDEN = 16
STEPS = 3000
LEARNING_RATE = 0.5
DECIMALS = 5  # weights are rounded so that the file does not depend on the last bits of the fit

# name, unit, mean, standard deviation in normal operation
FEATURES = (
    ("motor_temp", "degC", 55.0, 4.0),
    ("ambient_temp", "degC", 22.0, 3.0),
    ("vibration_rms", "mm/s", 2.0, 0.4),
    ("vibration_peak", "mm/s", 5.0, 1.0),
    ("current", "A", 12.0, 0.8),
    ("voltage", "V", 400.0, 4.0),
    ("speed", "rpm", 1480.0, 8.0),
    ("acoustic", "dB", 70.0, 2.5),
)
INPUT_NAME = "sensor_readings"
OUTPUT_NAME = "anomaly_score"


def make_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` readings (float32 [n, 8]) and labels (1 = anomaly), about a third anomalous."""
    mean = np.array([f[2] for f in FEATURES])
    std = np.array([f[3] for f in FEATURES])
    x = rng.normal(mean, std, size=(n, len(FEATURES)))
    x[:, 0] += 0.6 * (x[:, 1] - mean[1])  # the motor runs warmer on a warm day
    y = (rng.random(n) < 0.35).astype(np.float64)
    faults = rng.integers(0, 5, size=n)
    size = rng.uniform(0.6, 1.0, size=n)
    for i in np.flatnonzero(y):
        s = size[i]
        if faults[i] == 0:    # overheating
            x[i, 0] += 25 * s
        elif faults[i] == 1:  # bearing wear: vibration and noise
            x[i, 2] += 3.0 * s
            x[i, 3] += 6.0 * s
            x[i, 7] += 6.0 * s
        elif faults[i] == 2:  # overload: current up, speed down, hotter
            x[i, 4] += 6.0 * s
            x[i, 6] -= 40.0 * s
            x[i, 0] += 8.0 * s
        elif faults[i] == 3:  # supply sag
            x[i, 5] -= 35.0 * s
            x[i, 4] += 2.5 * s
        else:                 # stall or sensor fault: speed collapses
            x[i, 6] -= 300.0 * s
    return x.astype(np.float32), y


def fit(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Weights of the network on raw readings (standardisation folded into layer 1), float32."""
    x = x.astype(np.float64)
    mu, sigma = x.mean(axis=0), x.std(axis=0)
    z = (x - mu) / sigma
    w1 = rng.normal(0.0, np.sqrt(2.0 / z.shape[1]), size=(HIDDEN, z.shape[1]))
    b1 = np.zeros(HIDDEN)
    w2 = rng.normal(0.0, np.sqrt(1.0 / HIDDEN), size=(1, HIDDEN))
    b2 = np.zeros(1)
    n = len(z)
    for _ in range(STEPS):
        pre = z @ w1.T + b1
        h = np.maximum(pre, 0.0)
        p = 1.0 / (1.0 + np.exp(-(h @ w2.T + b2)))
        d_logit = (p[:, 0] - y)[:, None] / n          # cross-entropy gradient
        d_w2, d_b2 = d_logit.T @ h, d_logit.sum(axis=0)
        d_pre = (d_logit @ w2) * (pre > 0)
        d_w1, d_b1 = d_pre.T @ z, d_pre.sum(axis=0)
        w1 -= LEARNING_RATE * d_w1
        b1 -= LEARNING_RATE * d_b1
        w2 -= LEARNING_RATE * d_w2
        b2 -= LEARNING_RATE * d_b2
    folded_w1 = w1 / sigma                # W1 (x - mu) / sigma + b1 = (W1 / sigma) x + (b1 - (W1 / sigma) mu)
    folded_b1 = b1 - folded_w1 @ mu
    return {
        "dense_1/weights": np.round(folded_w1, DECIMALS).astype(np.float32),
        "dense_1/bias": np.round(folded_b1, DECIMALS - 2).astype(np.float32),
        "dense_2/weights": np.round(w2, DECIMALS).astype(np.float32),
        "dense_2/bias": np.round(b2, DECIMALS).astype(np.float32),
    }


def forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The network in numpy, float32 like the model: [N, 8] -> [N, 1]."""
    x = np.asarray(x, dtype=np.float32)
    h = np.maximum(x @ weights["dense_1/weights"].T + weights["dense_1/bias"], np.float32(0))
    logit = h @ weights["dense_2/weights"].T + weights["dense_2/bias"]
    return (np.float32(1) / (np.float32(1) + np.exp(-logit))).astype(np.float32)


def build_tflite(weights: dict[str, np.ndarray]) -> bytes:
    """The .tflite flatbuffer of the network with these weights."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    buffers = [tfl.BufferT()]  # buffer 0 is the empty sentinel every model starts with
    tensors = []

    def tensor(name: str, shape: tuple[int, ...], data: np.ndarray | None = None) -> int:
        t = tfl.TensorT()
        t.name, t.shape, t.type = name, list(shape), tfl.TensorType.FLOAT32
        t.buffer = 0
        if data is not None:
            buffer = tfl.BufferT()
            buffer.data = list(np.ascontiguousarray(data, dtype="<f4").tobytes())
            buffers.append(buffer)
            t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    n_in = weights["dense_1/weights"].shape[1]
    x = tensor(INPUT_NAME, (1, n_in))
    w1 = tensor("dense_1/weights", weights["dense_1/weights"].shape, weights["dense_1/weights"])
    b1 = tensor("dense_1/bias", weights["dense_1/bias"].shape, weights["dense_1/bias"])
    pre = tensor("dense_1/preactivation", (1, HIDDEN))
    h = tensor("dense_1/relu", (1, HIDDEN))
    w2 = tensor("dense_2/weights", weights["dense_2/weights"].shape, weights["dense_2/weights"])
    b2 = tensor("dense_2/bias", weights["dense_2/bias"].shape, weights["dense_2/bias"])
    logit = tensor("dense_2/logit", (1, 1))
    score = tensor(OUTPUT_NAME, (1, 1))

    codes = []
    for builtin in (tfl.BuiltinOperator.FULLY_CONNECTED, tfl.BuiltinOperator.RELU, tfl.BuiltinOperator.LOGISTIC):
        code = tfl.OperatorCodeT()
        code.builtinCode = builtin
        code.deprecatedBuiltinCode = builtin  # readers take the larger of the two; both hold the code below 127
        code.version = 1
        codes.append(code)
    fc, relu, logistic = range(3)

    def operator(opcode: int, inputs: list[int], outputs: list[int]) -> object:
        op = tfl.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode, inputs, outputs
        if opcode == fc:
            options = tfl.FullyConnectedOptionsT()
            options.fusedActivationFunction = tfl.ActivationFunctionType.NONE
            options.weightsFormat = tfl.FullyConnectedOptionsWeightsFormat.DEFAULT
            op.builtinOptionsType, op.builtinOptions = tfl.BuiltinOptions.FullyConnectedOptions, options
        return op

    subgraph = tfl.SubGraphT()
    subgraph.name = "main"
    subgraph.tensors = tensors
    subgraph.inputs, subgraph.outputs = [x], [score]
    subgraph.operators = [
        operator(fc, [x, w1, b1], [pre]),
        operator(relu, [pre], [h]),
        operator(fc, [h, w2, b2], [logit]),
        operator(logistic, [logit], [score]),
    ]

    def tensor_map(name: str, index: int) -> object:
        entry = tfl.TensorMapT()
        entry.name, entry.tensorIndex = name, index
        return entry

    signature = tfl.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    signature.inputs, signature.outputs = [tensor_map(INPUT_NAME, x)], [tensor_map(OUTPUT_NAME, score)]

    model = tfl.ModelT()
    model.version = 3
    model.description = "sensor-anomaly: motor anomaly score from 8 readings (edgefleet example module)"
    model.operatorCodes = codes
    model.subgraphs = [subgraph]
    model.buffers = buffers
    model.signatureDefs = [signature]

    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_weights(data: bytes) -> dict[str, np.ndarray]:
    """The constant tensors of a model built here, by name (to check a file against numpy)."""
    from ai_edge_litert import schema_py_generated as tfl

    model = tfl.ModelT.InitFromPackedBuf(data, 0)
    weights = {}
    for t in model.subgraphs[0].tensors:
        raw = model.buffers[t.buffer].data
        if raw is not None and len(raw):
            name = t.name.decode() if isinstance(t.name, bytes) else t.name
            weights[name] = np.frombuffer(bytes(bytearray(raw)), dtype="<f4").reshape(t.shape).astype(np.float32)
    return weights


def main() -> None:
    rng = np.random.default_rng(SEED)
    x_train, y_train = make_data(rng, 4000)
    weights = fit(x_train, y_train, rng)
    x_test, y_test = make_data(rng, 2000)
    accuracy = float(((forward(weights, x_test)[:, 0] > 0.5) == (y_test > 0.5)).mean())
    data = build_tflite(weights)
    MODEL_FILE.write_bytes(data)
    print(f"wrote {MODEL_FILE} ({len(data)} bytes); accuracy on fresh synthetic data {accuracy:.3f}")


if __name__ == "__main__":
    main()
