"""Firmware profiles: what a hardware target offers and how to run models on it.

A profile is a small TOML file, one per hardware target, shipped in the
top-level :mod:`firmware_profiles` package (or given as a path). It names the
board's architecture and memory, the accelerators it has, the ONNX Runtime
execution providers to try in order (with their provider options) and the
LiteRT delegates to try in order, plus the limits a bundle must fit in.

Schema (every field required unless marked optional)::

    name = "jetson-orin-nano"          # lowercase identifier
    description = "..."                 # optional
    arch = "arm64"                      # one of ARCHES
    memory_mb = 8192
    accelerators = ["cpu", "gpu"]       # kinds from ACCELERATOR_KINDS
    max_model_bytes = 268435456         # the largest model file accepted
    memory_budget_mb = 4096             # what the agent's models may use, <= memory_mb
    relative_speed_percent = 40         # optional, default 100: model latency here is the latency
                                        # measured on the server's CPU x 100 / this (deployment gates)

    [[onnx_providers]]                  # optional; tried in order, CPU last
    name = "TensorrtExecutionProvider"
    options = { trt_fp16_enable = true }

    [[tflite_delegates]]                # optional; tried in order, built-in CPU last
    name = "edgetpu"
    library = "libedgetpu.so.1"         # required for external delegates
    options = {}

Option values are strings, integers or booleans (no floats: profiles appear
in signed and canonical documents, which refuse floats). Unknown keys are
refused so that a typo cannot silently drop a setting.

Pure: parsing is a function of the document's bytes. Finding and reading
profile files (by name among the shipped ones, or from a path) is
:func:`firmware_profiles.load_profile`'s job, outside this package.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field as dc_field

from .errors import BadDataError
from .fields import count_field, field, name_field, refuse_unknown_keys

ARCHES = ("x86-64", "arm64", "armv7", "riscv64")
ACCELERATOR_KINDS = ("cpu", "gpu", "npu", "tpu", "fpga", "dsp")
BUILTIN_DELEGATES = ("xnnpack", "cpu")
"""LiteRT delegates compiled into the interpreter: no library to load."""
CPU_PROVIDER = "CPUExecutionProvider"

_TOP_LEVEL_KEYS = {"name", "description", "arch", "memory_mb", "accelerators", "onnx_providers",
                   "tflite_delegates", "max_model_bytes", "memory_budget_mb", "relative_speed_percent"}
_PROVIDER_KEYS = {"name", "options"}
_DELEGATE_KEYS = {"name", "library", "options"}
_BUILTIN_DELEGATE_OPTIONS = {"num_threads"}
_MACHINE_ARCH = {
    "x86_64": "x86-64", "amd64": "x86-64", "x86-64": "x86-64",
    "aarch64": "arm64", "arm64": "arm64", "armv8l": "arm64",
    "armv7l": "armv7", "armv7": "armv7", "armhf": "armv7",
    "riscv64": "riscv64",
}


class ProfileError(BadDataError):
    """A firmware profile file is missing, unreadable or malformed."""

    code = "bad_profile"
    category = "load"


@dataclass(frozen=True)
class ExecutionProvider:
    """One ONNX Runtime execution provider with its provider options."""

    name: str
    options: dict = dc_field(default_factory=dict)

    def __hash__(self) -> int:  # options is a dict; its values are str, int or bool
        return hash((self.name, tuple(sorted(self.options.items()))))

    def ort_options(self) -> dict[str, str]:
        """The options as ONNX Runtime takes them: every key and value a string."""
        return {str(k): str(v) for k, v in self.options.items()}

    def to_dict(self) -> dict:
        return {"name": self.name, "options": dict(self.options)}


@dataclass(frozen=True)
class Delegate:
    """One LiteRT delegate; ``library`` is None for the built-in ones (``xnnpack``, ``cpu``)."""

    name: str
    library: str | None = None
    options: dict = dc_field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.name, self.library, tuple(sorted(self.options.items()))))

    @property
    def builtin(self) -> bool:
        return self.library is None

    def to_dict(self) -> dict:
        return {"name": self.name, "library": self.library, "options": dict(self.options)}


@dataclass(frozen=True)
class FirmwareProfile:
    name: str
    description: str
    arch: str
    memory_mb: int
    accelerators: tuple[str, ...]
    onnx_providers: tuple[ExecutionProvider, ...]
    tflite_delegates: tuple[Delegate, ...]
    max_model_bytes: int
    memory_budget_mb: int
    relative_speed_percent: int = 100

    def to_dict(self) -> dict:
        """Plain JSON-able form (no floats), e.g. for the agent's reported state."""
        return {
            "name": self.name,
            "description": self.description,
            "arch": self.arch,
            "memory_mb": self.memory_mb,
            "accelerators": list(self.accelerators),
            "onnx_providers": [p.to_dict() for p in self.onnx_providers],
            "tflite_delegates": [d.to_dict() for d in self.tflite_delegates],
            "max_model_bytes": self.max_model_bytes,
            "memory_budget_mb": self.memory_budget_mb,
            "relative_speed_percent": self.relative_speed_percent,
        }


def parse_profile(doc: dict, *, source: str) -> FirmwareProfile:
    """Validate a profile document; raise :class:`ProfileError` naming the field and ``source``."""
    where = f"firmware profile {source}"
    if not isinstance(doc, dict):
        raise ProfileError(f"{where}: must be a table of fields")
    _refuse_unknown(doc, _TOP_LEVEL_KEYS, where)
    err = ProfileError
    name = name_field(doc, "name", where=where, error=err)
    arch = field(doc, "arch", str, where=where, error=err)
    if arch not in ARCHES:
        raise ProfileError(f"{where}: field 'arch' must be one of {', '.join(ARCHES)}, got {arch!r}")
    memory_mb = count_field(doc, "memory_mb", where=where, minimum=1, error=err)
    accelerators = field(doc, "accelerators", list, where=where, error=err)
    for kind in accelerators:
        if kind not in ACCELERATOR_KINDS:
            raise ProfileError(f"{where}: field 'accelerators' has {kind!r}, "
                               f"which is not one of {', '.join(ACCELERATOR_KINDS)}")
    if len(set(accelerators)) != len(accelerators):
        raise ProfileError(f"{where}: field 'accelerators' lists a kind twice")
    memory_budget_mb = count_field(doc, "memory_budget_mb", where=where, minimum=1, error=err)
    if memory_budget_mb > memory_mb:
        raise ProfileError(f"{where}: field 'memory_budget_mb' ({memory_budget_mb}) "
                           f"is more than memory_mb ({memory_mb})")
    raw_providers = field(doc, "onnx_providers", list, where=where, optional=True, default=[], error=err)
    raw_delegates = field(doc, "tflite_delegates", list, where=where, optional=True, default=[], error=err)
    return FirmwareProfile(
        name=name,
        description=field(doc, "description", str, where=where, optional=True, default="", error=err),
        arch=arch,
        memory_mb=memory_mb,
        accelerators=tuple(accelerators),
        onnx_providers=tuple(_parse_provider(raw, i, where) for i, raw in enumerate(raw_providers)),
        tflite_delegates=tuple(_parse_delegate(raw, i, where) for i, raw in enumerate(raw_delegates)),
        max_model_bytes=count_field(doc, "max_model_bytes", where=where, minimum=1, error=err),
        memory_budget_mb=memory_budget_mb,
        relative_speed_percent=count_field(doc, "relative_speed_percent", where=where, minimum=1, optional=True,
                                           default=100, error=err),
    )


def normalize_arch(machine: str) -> str | None:
    """Map ``platform.machine()`` (``x86_64``, ``aarch64``, ...) to a profile arch, or None."""
    return _MACHINE_ARCH.get(machine.strip().lower())


def parse_profile_toml(data: bytes, *, source: str, expected_name: str | None = None) -> FirmwareProfile:
    """Validate a profile file's bytes (UTF-8 TOML); with ``expected_name``, the file must declare that name."""
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProfileError(f"firmware profile {source}: not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"firmware profile {source}: not valid TOML: {exc}") from None
    profile = parse_profile(doc, source=source)
    if expected_name is not None and profile.name != expected_name:
        raise ProfileError(f"firmware profile {source}: field 'name' is {profile.name!r}, expected {expected_name!r}")
    return profile


def _refuse_unknown(doc: dict, known: set[str], where: str) -> None:
    refuse_unknown_keys(doc, known, where=where, error=ProfileError)


def _parse_options(raw: dict, where: str) -> dict:
    options = field(raw, "options", dict, where=where, optional=True, default={}, error=ProfileError)
    for key, value in options.items():
        if not isinstance(value, (str, int, bool)):
            raise ProfileError(f"{where}: option '{key}' must be a string, integer or boolean, "
                               f"got {type(value).__name__}")
    return dict(options)


def _parse_provider(raw: object, index: int, where: str) -> ExecutionProvider:
    where = f"{where}: onnx_providers[{index}]"
    if not isinstance(raw, dict):
        raise ProfileError(f"{where} must be a table")
    _refuse_unknown(raw, _PROVIDER_KEYS, where)
    name = field(raw, "name", str, where=where, error=ProfileError)
    if not name.endswith("ExecutionProvider") or not name.isidentifier():
        raise ProfileError(f"{where}: field 'name' must be an ONNX Runtime provider name "
                           f"such as CPUExecutionProvider, got {name!r}")
    return ExecutionProvider(name, _parse_options(raw, where))


def _parse_delegate(raw: object, index: int, where: str) -> Delegate:
    where = f"{where}: tflite_delegates[{index}]"
    if not isinstance(raw, dict):
        raise ProfileError(f"{where} must be a table")
    _refuse_unknown(raw, _DELEGATE_KEYS, where)
    name = name_field(raw, "name", where=where, error=ProfileError)
    library = field(raw, "library", str, where=where, optional=True, error=ProfileError)
    options = _parse_options(raw, where)
    if name in BUILTIN_DELEGATES:
        if library is not None:
            raise ProfileError(f"{where}: field 'library' must be absent for the built-in {name!r} delegate")
        extra = sorted(set(options) - _BUILTIN_DELEGATE_OPTIONS)
        if extra:
            raise ProfileError(f"{where}: option {extra[0]!r} is not supported by the built-in {name!r} delegate "
                               f"(supported: {', '.join(sorted(_BUILTIN_DELEGATE_OPTIONS))})")
        threads = options.get("num_threads")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ProfileError(f"{where}: option 'num_threads' must be an integer >= 1")
    elif not library:
        raise ProfileError(f"{where}: field 'library' is required for the external {name!r} delegate")
    return Delegate(name, library, options)
