"""Which accelerator runs a model: execution providers (ONNX) and delegates (LiteRT).

A firmware profile lists, in order of preference, the ONNX Runtime execution
providers and the LiteRT delegates a board should use. A module may replace
that order with an override (a list of provider or delegate names). This
module turns that wish list into a loaded session or interpreter:

1. :func:`choose_onnx_providers` (pure) keeps the wanted providers that this
   onnxruntime build reports as available, always ending with the CPU
   provider, and says why each other one was skipped.
2. :func:`create_onnx_session` tries the chain in order. Each provider is
   tried alone first (with ONNX Runtime's implicit CPU fallback disabled, so
   that a provider that cannot run every node fails instead of quietly
   handing nodes to the CPU), then together with the CPU provider. The
   provider the session really got (``session.get_providers()[0]``) is
   checked, and a provider that loads only together with the CPU must still
   take at least one node (where onnxruntime can tell); any failure moves
   down the chain with the reason in the notes.
3. :func:`create_tflite_interpreter` does the same for LiteRT: external
   delegates are loaded with ``load_delegate(library, options)`` (and the
   interpreter's default delegates are then turned off, so that a delegate
   that takes no node of the model, e.g. the Edge TPU with a model not
   compiled for it, is seen and skipped); ``xnnpack`` (the interpreter's
   built-in default delegate) and ``cpu`` (built-in kernels without default
   delegates) need no library and end every chain.

Every fallback is recorded in the returned notes and logged on
``edgefleet.runtime.accelerators``, so a device that silently runs on the CPU
is visible in its reported state. The notes' :attr:`LoadNotes.failed` names
the accelerators that are present on this device, came before the one in
use in the wished order (the module's ``config.accelerators`` or the
profile's), and failed to load or run the model: that, and not a provider
missing from this onnxruntime build or a delegate library that is not
installed, is what ``on_accelerator_failure`` sends to the cloud.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet_protocol.errors import EdgefleetError
from fleet_protocol.profiles import BUILTIN_DELEGATES, CPU_PROVIDER, Delegate, ExecutionProvider, FirmwareProfile

if TYPE_CHECKING:  # pragma: no cover - typing only
    import onnxruntime

log = logging.getLogger("edgefleet.runtime.accelerators")

_DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"
_RECORD_ASSIGNMENT = "session.record_ep_graph_assignment_info"
XNNPACK = "xnnpack"
CPU = "cpu"


class LoadNotes(list):
    """The notes (a list of lines, as reported) plus ``failed``: present accelerators that failed, in order."""

    def __init__(self, notes: Sequence[str] = ()):
        super().__init__(notes)
        self.failed: list[str] = []


class ModelLoadError(EdgefleetError):
    """No entry of the accelerator chain, not even the CPU, could load the model."""

    code = "model_load_failed"
    category = "load"

    def __init__(self, message: str, notes: Sequence[str] = ()):
        super().__init__(message)
        self.notes = list(notes)


# --- ONNX Runtime ------------------------------------------------------------------------------


def describe_provider(provider: ExecutionProvider) -> str:
    """``OpenVINOExecutionProvider (device_type=NPU)``: the name, plus the device when one is set."""
    if "device_type" in provider.options:
        return f"{provider.name} (device_type={provider.options['device_type']})"
    return provider.name


def choose_onnx_providers(wanted: Sequence[ExecutionProvider],
                          available: Sequence[str]) -> tuple[list[ExecutionProvider], list[str]]:
    """The wanted providers that are available, in order, CPU last; and a note per skipped one."""
    chain: list[ExecutionProvider] = []
    notes: list[str] = []
    have = set(available)
    listed = ", ".join(available) if available else "none"
    for provider in wanted:
        if provider in chain:
            continue
        if provider.name in have or provider.name == CPU_PROVIDER:
            chain.append(provider)
        else:
            notes.append(f"{describe_provider(provider)} not available on this device "
                         f"(available: {listed}); falling back")
    if not any(p.name == CPU_PROVIDER for p in chain):
        chain.append(ExecutionProvider(CPU_PROVIDER, {}))
    return chain, notes


def onnx_wish_list(profile: FirmwareProfile, override: Sequence[str] | None = None) -> list[ExecutionProvider]:
    """The profile's providers, or the ``override`` names in their order (profile options kept)."""
    if override is None:
        return list(profile.onnx_providers)
    wished: list[ExecutionProvider] = []
    for name in override:
        matches = [p for p in profile.onnx_providers if p.name == name]
        wished.extend(matches or [ExecutionProvider(name, {})])
    return wished


def create_onnx_session(
    model_path: Path,
    profile: FirmwareProfile,
    override: Sequence[str] | None = None,
    session_options: "onnxruntime.SessionOptions | None" = None,
) -> tuple["onnxruntime.InferenceSession", str, list[str]]:
    """Open ``model_path`` on the best provider that works; return ``(session, provider, notes)``.

    A provider that only loads together with the CPU provider must still
    run at least one node (checked where onnxruntime records node assignment,
    1.23 and later); otherwise it is skipped as useless. ``session_options``
    is used for every attempt: its ``session.disable_cpu_ep_fallback`` entry
    is switched per attempt and left at ``"0"`` (the default) afterwards, and
    ``session.record_ep_graph_assignment_info`` is set to ``"1"``. Raises
    :class:`ModelLoadError` when not even the CPU provider loads the model.
    """
    import onnxruntime as ort

    chain, skipped = choose_onnx_providers(onnx_wish_list(profile, override), ort.get_available_providers())
    notes = LoadNotes(skipped)  # skipped ones are absent from this build: not failures
    for note in notes:
        log.warning("%s: %s", Path(model_path).name, note)
    try:
        for index, provider in enumerate(chain):
            attempts = [False] if provider.name == CPU_PROVIDER else [True, False]
            for alone in attempts:
                label = describe_provider(provider) + (" alone" if alone else " with CPU fallback")
                try:
                    session = _onnx_session(ort, model_path, provider, alone, session_options)
                except Exception as exc:  # onnxruntime raises its own pybind types, not one base class
                    note = f"{label} failed: {_reason(exc)}"
                    if alone:
                        note += "; retrying with CPU fallback"
                    _record(notes, model_path, note)
                    continue
                actual = session.get_providers()[0]
                if actual != provider.name:
                    _record(notes, model_path, f"{label} was requested but the session runs on {actual}")
                    continue
                if not alone and provider.name != CPU_PROVIDER:
                    counts = _nodes_per_provider(session)
                    if counts is not None and counts.get(provider.name, 0) == 0:
                        _record(notes, model_path, f"{describe_provider(provider)} took no node of the model; "
                                                   "falling back")
                        continue
                    share = "" if counts is None else f" ({counts[provider.name]} of {sum(counts.values())} nodes)"
                    notes.append(f"{describe_provider(provider)} cannot run every node of the model{share}; "
                                 f"the rest runs on {CPU_PROVIDER}")
                log.info("%s: loaded on %s", Path(model_path).name, describe_provider(provider))
                notes.failed = [describe_provider(p) for p in chain[:index]]  # each is in this build, so present
                return session, actual, notes
    finally:
        if session_options is not None:
            _set_cpu_fallback(session_options, disabled=False)
    raise ModelLoadError(f"no execution provider could load {Path(model_path).name}: {'; '.join(notes)}", notes)


def _onnx_session(ort: Any, model_path: Path, provider: ExecutionProvider, alone: bool,
                  session_options: Any) -> Any:
    options = session_options if session_options is not None else ort.SessionOptions()
    _set_cpu_fallback(options, disabled=alone)
    if not alone and _config_entry(options, _RECORD_ASSIGNMENT) is None:
        options.add_session_config_entry(_RECORD_ASSIGNMENT, "1")  # read by _nodes_per_provider
    providers: list = [(provider.name, provider.ort_options())]
    if not alone and provider.name != CPU_PROVIDER:
        providers.append((CPU_PROVIDER, {}))
    severity = options.log_severity_level
    if alone:  # an expected failure: its reason goes into the notes, not onnxruntime's error log
        options.log_severity_level = 4
    try:
        # enable_fallback=0: onnxruntime's Python wrapper would otherwise retry a
        # failed provider on the CPU behind our back (and again at run time).
        return ort.InferenceSession(str(model_path), sess_options=options, providers=providers, enable_fallback=0)
    finally:
        options.log_severity_level = severity


def _set_cpu_fallback(options: Any, *, disabled: bool) -> None:
    value = "1" if disabled else "0"
    current = _config_entry(options, _DISABLE_CPU_FALLBACK)
    if current != value and not (current is None and value == "0"):
        options.add_session_config_entry(_DISABLE_CPU_FALLBACK, value)


def _config_entry(options: Any, key: str) -> str | None:
    try:
        return options.get_session_config_entry(key)
    except Exception:  # onnxruntime raises when the entry was never set
        return None


def _nodes_per_provider(session: Any) -> dict[str, int] | None:
    """Nodes assigned to each provider, or None where onnxruntime (< 1.23 or so) cannot tell."""
    info = getattr(session, "get_provider_graph_assignment_info", None)
    if info is None:
        return None
    try:
        counts: dict[str, int] = {}
        for subgraph in info():
            counts[subgraph.ep_name] = counts.get(subgraph.ep_name, 0) + len(subgraph.get_nodes())
    except Exception:
        return None
    return counts or None


# --- LiteRT ------------------------------------------------------------------------------------


def tflite_wish_list(profile: FirmwareProfile,
                     override: Sequence[str] | None = None) -> tuple[list[Delegate], list[str]]:
    """The delegates to try, in order, ending with ``xnnpack`` then ``cpu``; and notes.

    With ``override``, its names in their order: built-in names need nothing,
    other names take their library and options from the profile; a name the
    profile does not know cannot be loaded and is skipped with a note.
    """
    notes: list[str] = []
    if override is None:
        wished = list(profile.tflite_delegates)
    else:
        wished = []
        for name in override:
            matches = [d for d in profile.tflite_delegates if d.name == name]
            if matches:
                wished.extend(matches)
            elif name in BUILTIN_DELEGATES:
                wished.append(Delegate(name, None, {}))
            else:
                notes.append(f"delegate {name!r} is not in firmware profile {profile.name}, "
                             "so its library is unknown; skipped")
    chain: list[Delegate] = []
    for delegate in wished:
        if delegate not in chain:
            chain.append(delegate)
    threads = next((d.options["num_threads"] for d in chain if d.builtin and "num_threads" in d.options), None)
    extra = {"num_threads": threads} if threads is not None else {}
    for name in (XNNPACK, CPU):
        if not any(d.name == name for d in chain):
            chain.append(Delegate(name, None, dict(extra)))
    return chain, notes


def create_tflite_interpreter(model_path: Path, profile: FirmwareProfile,
                              override: Sequence[str] | None = None) -> tuple[Any, str, list[str]]:
    """Open ``model_path`` with the first delegate that loads; return ``(interpreter, name, notes)``.

    The interpreter has had ``allocate_tensors()`` called. ``name`` is the
    delegate's name (``edgetpu``, ``gpu``, ``xnnpack``, ``cpu``). Raises
    :class:`ModelLoadError` when even the built-in CPU kernels fail.
    """
    interpreter_cls, load_delegate, resolver = _litert()
    chain, skipped = tflite_wish_list(profile, override)
    notes = LoadNotes(skipped)
    for note in notes:
        log.warning("%s: %s", Path(model_path).name, note)
    for delegate in chain:
        try:
            interpreter = _tflite_interpreter(interpreter_cls, load_delegate, resolver, model_path, delegate)
        except OSError as exc:  # only _check_delegate_library: the library is not installed here (absent)
            _record(notes, model_path, f"delegate {delegate.name!r} not available on this device: "
                                       f"{_reason(exc)}; falling back")
            continue
        except Exception as exc:  # ValueError, RuntimeError from the native side
            _record(notes, model_path, f"delegate {delegate.name!r} failed: {_reason(exc)}; falling back")
            notes.failed.append(delegate.name)
            continue
        name = delegate.name
        delegated = _delegated_nodes(interpreter)
        if delegated == 0 and not delegate.builtin:
            _record(notes, model_path, f"delegate {delegate.name!r} loaded but took no operation of this model "
                                       "(is the model compiled for it?); falling back")
            notes.failed.append(delegate.name)
            continue
        if delegated == 0 and name == XNNPACK:
            _record(notes, model_path, "XNNPACK took no operation of this model; it runs on the built-in CPU kernels")
            name = CPU
        log.info("%s: loaded with the %s delegate", Path(model_path).name, name)
        return interpreter, name, notes
    raise ModelLoadError(f"no LiteRT delegate could load {Path(model_path).name}: {'; '.join(notes)}", notes)


def _tflite_interpreter(interpreter_cls: Any, load_delegate: Any, resolver: Any, model_path: Path,
                        delegate: Delegate) -> Any:
    kwargs: dict[str, Any] = {"model_path": str(model_path)}
    if delegate.builtin:
        if delegate.options.get("num_threads") is not None:
            kwargs["num_threads"] = int(delegate.options["num_threads"])
        if resolver is not None:
            kwargs["experimental_op_resolver_type"] = (
                resolver.AUTO if delegate.name == XNNPACK else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    else:
        options = {str(k): str(v) for k, v in delegate.options.items()}
        _check_delegate_library(delegate.library)
        kwargs["experimental_delegates"] = [load_delegate(delegate.library, options or None)]
        if resolver is not None:  # so that every delegated node counted below is this delegate's
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = interpreter_cls(**kwargs)
    interpreter.allocate_tensors()
    return interpreter


def _check_delegate_library(library: str) -> None:
    """Fail cleanly before ``load_delegate``, whose half-built object errors again when collected.

    OSError: the library is not installed (absent); ValueError: it is there but is no delegate (failed).
    """
    try:
        handle = ctypes.CDLL(library)
    except OSError as exc:
        message = str(exc)
        raise OSError(message if library in message else f"cannot load {library}: {message}") from None
    if not hasattr(handle, "tflite_plugin_create_delegate"):
        raise ValueError(f"{library} is not a LiteRT external delegate (no tflite_plugin_create_delegate)")


def _delegated_nodes(interpreter: Any) -> int | None:
    """How many nodes a delegate runs (``DELEGATE`` ops), or None if this runtime cannot tell."""
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return None
    try:
        return sum(1 for op in details() if op.get("op_name") == "DELEGATE")
    except Exception:
        return None


def _litert() -> tuple[Any, Any, Any]:
    """``(Interpreter, load_delegate, OpResolverType or None)`` from ai_edge_litert, else tflite_runtime."""
    try:
        from ai_edge_litert import interpreter as module
    except ImportError:
        try:
            from tflite_runtime import interpreter as module  # type: ignore[no-redef]
        except ImportError:
            raise ModelLoadError("no LiteRT runtime installed (pip install ai-edge-litert)") from None
    return module.Interpreter, module.load_delegate, getattr(module, "OpResolverType", None)


# --- shared ------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _record(notes: list[str], model_path: Path, note: str) -> None:
    notes.append(note)
    log.warning("%s: %s", Path(model_path).name, note)
