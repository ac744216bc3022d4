"""Execution-provider and delegate choice: pure chain logic, then real sessions on this CPU-only machine."""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

from edgefleet_runtime.accelerators import (
    ModelLoadError,
    choose_onnx_providers,
    create_onnx_session,
    create_tflite_interpreter,
    onnx_wish_list,
    tflite_wish_list,
)
from firmware_profiles import load_profile
from fleet_protocol.profiles import Delegate, ExecutionProvider, FirmwareProfile

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
XNN = "XnnpackExecutionProvider"
SENSOR = Path(__file__).resolve().parents[2] / "modules" / "sensor-anomaly"


def ep(name: str, **options) -> ExecutionProvider:
    return ExecutionProvider(name, options)


def profile_with(providers=(), delegates=(), name="test-board") -> FirmwareProfile:
    return FirmwareProfile(name=name, description="", arch="x86-64", memory_mb=1024, accelerators=("cpu",),
                           onnx_providers=tuple(providers), tflite_delegates=tuple(delegates),
                           max_model_bytes=1 << 20, memory_budget_mb=512)


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    """y = relu(x @ W + b), x float32 [N, 4] -> y [N, 3], built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5
    b = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def tiny_expected(x: np.ndarray) -> np.ndarray:
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5
    return np.maximum(x @ w + np.array([0.1, -0.2, 0.3], dtype=np.float32), 0)


# --- pure choice ------------------------------------------------------------------------------


def test_available_providers_are_kept_in_order_with_cpu_last():
    chain, notes = choose_onnx_providers([ep(TRT, trt_fp16_enable=True), ep(CUDA), ep(CPU)], [TRT, CUDA, CPU])
    assert [p.name for p in chain] == [TRT, CUDA, CPU]
    assert chain[0].options == {"trt_fp16_enable": True}
    assert notes == []


def test_unavailable_providers_are_skipped_with_a_note_each():
    chain, notes = choose_onnx_providers([ep(TRT), ep(CUDA), ep(CPU)], [CPU])
    assert chain == [ep(CPU)]
    assert notes == [
        f"{TRT} not available on this device (available: {CPU}); falling back",
        f"{CUDA} not available on this device (available: {CPU}); falling back",
    ]


def test_cpu_is_appended_when_the_wish_list_lacks_it():
    chain, notes = choose_onnx_providers([ep(CUDA)], [CUDA, CPU])
    assert [p.name for p in chain] == [CUDA, CPU] and notes == []
    chain, notes = choose_onnx_providers([], [CPU])
    assert chain == [ep(CPU)] and notes == []
    chain, _ = choose_onnx_providers([ep(XNN)], [])  # CPU even when the list is odd
    assert chain == [ep(CPU)]


def test_one_provider_with_several_devices_stays_in_order_and_names_the_device():
    wanted = [ep("OpenVINOExecutionProvider", device_type=d) for d in ("NPU", "GPU", "CPU")] + [ep(CPU)]
    chain, notes = choose_onnx_providers(wanted, ["OpenVINOExecutionProvider", CPU])
    assert [p.options.get("device_type") for p in chain] == ["NPU", "GPU", "CPU", None]
    _, notes = choose_onnx_providers(wanted, [CPU])
    assert [n.split(" not available")[0] for n in notes] == [
        "OpenVINOExecutionProvider (device_type=NPU)", "OpenVINOExecutionProvider (device_type=GPU)",
        "OpenVINOExecutionProvider (device_type=CPU)"]


def test_duplicates_are_tried_once():
    chain, _ = choose_onnx_providers([ep(CUDA), ep(CUDA), ep(CPU), ep(CPU)], [CUDA, CPU])
    assert [p.name for p in chain] == [CUDA, CPU]


def test_an_override_replaces_the_profile_order_and_keeps_profile_options():
    jetson = load_profile("jetson-orin-nano")
    wished = onnx_wish_list(jetson, [CUDA, TRT])
    assert [p.name for p in wished] == [CUDA, TRT]
    assert wished[1].options["trt_fp16_enable"] is True
    assert onnx_wish_list(jetson, ["DmlExecutionProvider"]) == [ep("DmlExecutionProvider")]
    assert onnx_wish_list(jetson) == list(jetson.onnx_providers)
    chain, notes = choose_onnx_providers(onnx_wish_list(jetson, [CUDA, TRT]), [TRT, CUDA, CPU])
    assert [p.name for p in chain] == [CUDA, TRT, CPU]


def test_tflite_chains_end_with_the_built_in_delegates():
    coral = load_profile("coral-dev-board")
    chain, notes = tflite_wish_list(coral)
    assert [d.name for d in chain] == ["edgetpu", "xnnpack", "cpu"] and notes == []
    assert chain[-1].options == {"num_threads": 4}  # the profile's thread count carries over to the fallback
    chain, notes = tflite_wish_list(coral, ["cpu", "edgetpu", "gpu"])
    assert [d.name for d in chain] == ["cpu", "edgetpu", "xnnpack"]
    assert notes == ["delegate 'gpu' is not in firmware profile coral-dev-board, so its library is unknown; skipped"]


# --- real ONNX Runtime sessions (only the CPU provider exists here) -----------------------------


def test_jetson_profile_on_a_cpu_only_machine_runs_on_cpu_with_a_note_per_skipped_provider(tiny_onnx, caplog):
    import onnxruntime as ort

    if set(ort.get_available_providers()) & {TRT, CUDA}:
        pytest.skip("this machine has CUDA/TensorRT; the test is about a CPU-only device")
    with caplog.at_level(logging.WARNING, logger="edgefleet.runtime.accelerators"):
        session, accelerator, notes = create_onnx_session(tiny_onnx, load_profile("jetson-orin-nano"))
    assert accelerator == CPU
    assert session.get_providers() == [CPU]
    assert len(notes) == 2
    assert notes[0].startswith(f"{TRT} not available on this device (available: ")
    assert notes[1].startswith(f"{CUDA} not available on this device (available: ")
    assert all(n.endswith("; falling back") and CPU in n for n in notes)
    assert [r.getMessage() for r in caplog.records] == [f"tiny.onnx: {n}" for n in notes]
    x = np.array([[1, 2, 3, 4], [-1, 0, 1, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(session.run(["y"], {"x": x})[0], tiny_expected(x), rtol=1e-6)


def test_generic_cpu_profile_loads_without_notes(tiny_onnx):
    session, accelerator, notes = create_onnx_session(tiny_onnx, load_profile("generic-cpu"))
    assert (accelerator, notes) == (CPU, [])


def test_override_order_is_respected(tiny_onnx):
    profile = profile_with([ep(CUDA), ep(XNN), ep(CPU)])
    _, accelerator, notes = create_onnx_session(tiny_onnx, profile, override=[XNN, "DmlExecutionProvider", CUDA])
    assert accelerator == CPU
    assert [n.split(" ")[0] for n in notes] == [XNN, "DmlExecutionProvider", CUDA]


def test_override_can_put_cpu_first(tiny_onnx):
    _, accelerator, notes = create_onnx_session(tiny_onnx, load_profile("jetson-orin-nano"), override=[CPU, CUDA])
    assert accelerator == CPU
    assert [n.split(" ")[0] for n in notes] == [CUDA]


@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")
def test_a_provider_that_claims_to_be_available_but_fails_falls_down_the_chain(tiny_onnx, monkeypatch):
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        pytest.skip("CUDA really is available here")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    session, accelerator, notes = create_onnx_session(tiny_onnx, profile_with([ep(CUDA, device_id=0), ep(CPU)]))
    assert accelerator == CPU and session.get_providers()[0] == CPU
    assert notes[0].startswith(f"{CUDA} alone failed: ") and notes[0].endswith("retrying with CPU fallback")
    assert notes[1].startswith(f"{CUDA} with CPU fallback")
    assert len(notes) == 2


def test_a_real_provider_that_takes_no_node_is_skipped(tiny_onnx):
    """onnxruntime's default wheel ships AzureExecutionProvider, which runs no ordinary ONNX node."""
    import onnxruntime as ort

    azure = "AzureExecutionProvider"
    if azure not in ort.get_available_providers():
        pytest.skip("no AzureExecutionProvider in this onnxruntime build")
    session, accelerator, notes = create_onnx_session(tiny_onnx, profile_with([ep(azure), ep(CPU)]))
    assert notes[0].startswith(f"{azure} alone failed: ")
    if hasattr(session, "get_provider_graph_assignment_info"):  # onnxruntime can tell which EP got the nodes
        assert accelerator == CPU
        assert notes[1] == f"{azure} took no node of the model; falling back"
    else:
        assert accelerator == azure and "cannot run every node" in notes[1]


def test_caller_session_options_are_used_and_left_with_cpu_fallback_enabled(tiny_onnx):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    extra = [ep("AzureExecutionProvider")] if "AzureExecutionProvider" in ort.get_available_providers() else []
    session, accelerator, _ = create_onnx_session(tiny_onnx, profile_with([*extra, ep(CPU)]), session_options=options)
    assert accelerator == CPU
    assert session.get_session_options().intra_op_num_threads == 1
    assert options.log_severity_level == 3
    if extra:  # a provider was tried alone (CPU fallback disabled), then the switch was put back
        assert options.get_session_config_entry("session.disable_cpu_ep_fallback") == "0"


def test_a_model_no_provider_can_load_raises_with_the_notes(tmp_path: Path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelLoadError) as caught:
        create_onnx_session(bad, load_profile("jetson-orin-nano"))
    assert caught.value.code == "model_load_failed" and caught.value.category == "load"
    assert any(n.startswith(f"{CPU} with CPU fallback failed") for n in caught.value.notes)
    assert "broken.onnx" in str(caught.value)


# --- real LiteRT interpreters on the sensor-anomaly model ----------------------------------------


def sensor_reference(x: np.ndarray) -> np.ndarray:
    spec = importlib.util.spec_from_file_location("sensor_build_model_acc", SENSOR / "build_model.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.forward(build.read_weights((SENSOR / "model.tflite").read_bytes()), x)


def score(interpreter, x: np.ndarray) -> np.ndarray:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


READING = np.array([[70.0, 22.0, 2.0, 5.0, 12.0, 400.0, 1480.0, 70.0]], dtype=np.float32)


def test_missing_edgetpu_library_falls_back_to_xnnpack_with_a_note():
    coral = load_profile("coral-dev-board")
    interpreter, accelerator, notes = create_tflite_interpreter(SENSOR / "model.tflite", coral)
    assert accelerator == "xnnpack"
    assert len(notes) == 1
    assert notes[0].startswith("delegate 'edgetpu' not available on this device: ") and "libedgetpu.so.1" in notes[0]
    assert notes[0].endswith("falling back")
    np.testing.assert_allclose(score(interpreter, READING), sensor_reference(READING), rtol=1e-4, atol=3e-5)


def test_a_library_that_is_not_a_delegate_falls_back_with_a_note():
    try:
        ctypes.CDLL("libc.so.6")
    except OSError:
        pytest.skip("no glibc here")
    profile = profile_with(delegates=[Delegate("gpu", "libc.so.6", {})])
    _, accelerator, notes = create_tflite_interpreter(SENSOR / "model.tflite", profile)
    assert accelerator == "xnnpack"
    assert notes == ["delegate 'gpu' failed: libc.so.6 is not a LiteRT external delegate "
                     "(no tflite_plugin_create_delegate); falling back"]


def test_a_delegate_library_that_does_not_exist_falls_back_with_a_note(tmp_path: Path):
    profile = profile_with(delegates=[
        Delegate("gpu", str(tmp_path / "libno_such_delegate.so"), {"backend": "opencl"}),
        Delegate("xnnpack", None, {"num_threads": 2}),
    ])
    interpreter, accelerator, notes = create_tflite_interpreter(SENSOR / "model.tflite", profile)
    assert accelerator == "xnnpack"
    assert len(notes) == 1 and notes[0].startswith("delegate 'gpu' not available on this device: ")
    assert "libno_such_delegate.so" in notes[0] and notes.failed == [], "absent, not failed"
    np.testing.assert_allclose(score(interpreter, READING), sensor_reference(READING), rtol=1e-4, atol=3e-5)


def test_tflite_override_to_plain_cpu_kernels():
    interpreter, accelerator, notes = create_tflite_interpreter(
        SENSOR / "model.tflite", load_profile("coral-dev-board"), override=["cpu"])
    assert (accelerator, notes) == ("cpu", [])
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert ops == ["FULLY_CONNECTED", "RELU", "FULLY_CONNECTED", "LOGISTIC"]  # no delegate took any node
    np.testing.assert_allclose(score(interpreter, READING), sensor_reference(READING), rtol=1e-4, atol=3e-5)


def test_tflite_default_profile_uses_xnnpack():
    interpreter, accelerator, notes = create_tflite_interpreter(SENSOR / "model.tflite", load_profile("generic-cpu"))
    assert (accelerator, notes) == ("xnnpack", [])
    assert "DELEGATE" in [op["op_name"] for op in interpreter._get_ops_details()]


def test_a_tflite_file_nothing_can_load_raises(tmp_path: Path):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError) as caught:
        create_tflite_interpreter(bad, load_profile("generic-cpu"))
    assert [n.split(" failed")[0] for n in caught.value.notes] == ["delegate 'xnnpack'", "delegate 'cpu'"]


# --- what counts as an accelerator failure (the cloud fallback's on_accelerator_failure) ------------


@pytest.mark.parametrize("board", ["raspberry-pi-5", "jetson-orin-nano"])
def test_a_preferred_provider_absent_from_the_build_is_not_an_accelerator_failure(tiny_onnx, board):
    import onnxruntime as ort

    profile = load_profile(board)
    assert profile.onnx_providers[0].name not in ort.get_available_providers(), "the standard CPU wheel"
    _, accelerator, notes = create_onnx_session(tiny_onnx, profile)
    assert accelerator == CPU and "not available on this device" in notes[0]
    assert notes.failed == [], "absent from the build: the designed CPU fallback, scored here"


def test_a_present_provider_that_cannot_run_the_model_is_a_failure_unless_the_module_order_skips_it(tiny_onnx):
    import onnxruntime as ort

    azure = "AzureExecutionProvider"
    if azure not in ort.get_available_providers():
        pytest.skip("no AzureExecutionProvider in this onnxruntime build")
    profile = profile_with([ep(azure), ep(CPU)])
    _, accelerator, notes = create_onnx_session(tiny_onnx, profile)
    assert accelerator == CPU and notes.failed == [azure]
    _, accelerator, notes = create_onnx_session(tiny_onnx, profile, override=[CPU])
    assert accelerator == CPU and notes.failed == [], "the module's own order wanted the CPU first"


def test_a_delegate_library_that_is_there_but_fails_is_a_failure():
    try:
        ctypes.CDLL("libc.so.6")
    except OSError:
        pytest.skip("no glibc here")
    _, accelerator, notes = create_tflite_interpreter(
        SENSOR / "model.tflite", profile_with(delegates=[Delegate("gpu", "libc.so.6", {})]))
    assert accelerator == "xnnpack" and notes.failed == ["gpu"]
