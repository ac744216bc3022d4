"""A module's signature: the inputs and outputs its callers see (name, datatype, shape with -1 for a free dim).

``module.json`` may declare it::

    "signature": {"inputs":  [{"name": "float_input", "datatype": "FP32", "shape": [-1, 4]}],
                  "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]},
                              {"name": "class_name", "datatype": "BYTES", "shape": [-1]}]}

An entry script's extra outputs (``class_name`` above) are declared there,
never guessed. :meth:`Signature.from_dict` parses one (a typo is refused
naming the nearest key); :meth:`Signature.from_model` derives one from a
plain model's own tensors; :func:`check_against_model` refuses, at build, a
signature that disagrees with the model (:class:`SignatureMismatch`). The
signature is signed in the bundle manifest; the agent and the cloud read it
for ``/v2/models/<m>`` metadata and for checking a request's inputs
(:func:`edgefleet_runtime.inputs.mismatch` words the refusal). A bundle without one
(built before signatures) is described by its model, as before.

Pure, no I/O; not here: the checks of a request (``edgefleet_runtime.inputs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import oip
from .errors import BadDataError, MessageError
from .fields import field, refuse_unknown_keys

# The Open Inference Protocol's tensor datatypes (KServe v2); models report these, requests carry a subset.
DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BF16", "BYTES")
MAX_TENSORS = 64
MAX_DIMS = 32
MAX_NAME_CHARS = 256

TensorSpec = tuple[str, str, list[int]]  # (name, datatype, shape), as edgefleet_runtime.inputs reads them


class SignatureMismatch(BadDataError):
    """A declared signature that the model cannot keep: refused at build."""

    code = "bad_signature"
    category = "message"


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def __str__(self) -> str:
        return f"{self.name!r} {self.datatype} [{', '.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    def to_dict(self) -> dict:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    def input_specs(self) -> list[TensorSpec]:
        return [(t.name, t.datatype, list(t.shape)) for t in self.inputs]

    def output_specs(self) -> list[TensorSpec]:
        return [(t.name, t.datatype, list(t.shape)) for t in self.outputs]

    def output_problem(self, outputs: Mapping[str, object]) -> str | None:
        """What an answer's ``outputs`` do differently from the declared ones (name, datatype, shape), or None."""
        declared = {t.name: t for t in self.outputs}
        extra = [name for name in outputs if name not in declared]
        if extra:
            return f"output {extra[0]!r} is not declared (declared: {', '.join(map(str, self.outputs))})"
        for tensor in self.outputs:
            if tensor.name not in outputs:
                return f"output {tensor} is declared but missing"
            array = np.asarray(outputs[tensor.name])
            try:
                got = oip.datatype_of(array)
            except MessageError:
                got = str(array.dtype)
            if got != tensor.datatype or (tensor.shape and (
                    array.ndim != len(tensor.shape)
                    or any(d not in (-1, g) for d, g in zip(tensor.shape, array.shape)))):
                return f"output {tensor.name!r} is {got} {list(array.shape)}, declared {tensor}"
        return None

    @classmethod
    def from_model(cls, inputs: list[dict], outputs: list[dict]) -> "Signature":
        """The signature of a model without an entry script: its own tensors (as ``modelinfo`` reports them)."""
        return cls(tuple(_tensor_of(t) for t in inputs), tuple(_tensor_of(t) for t in outputs))

    @classmethod
    def from_dict(cls, doc: object, *, where: str, error: type[BadDataError]) -> "Signature":
        """Validate an untrusted signature; ``error`` names ``where`` and the field."""
        if not isinstance(doc, dict):
            raise error(f"{where} must be an object with 'inputs' and 'outputs'")
        refuse_unknown_keys(doc, ("inputs", "outputs"), where=where, error=error)
        return cls(_tensors(doc, "inputs", where, error), _tensors(doc, "outputs", where, error))


def check_against_model(signature: Signature, *, inputs: list[dict], outputs: list[dict], has_entry: bool,
                        where: str = "module.json: signature") -> None:
    """Refuse a signature the model (``modelinfo`` tensors) cannot keep.

    Without an entry script the model answers the callers itself: the same
    input and output names, the same datatypes, the same rank, and a fixed
    model dimension declared as that number (a free one may be declared as
    anything). An entry script decides what it takes and returns: a tensor
    that has a namesake in the model keeps its datatype and rank and, after
    the batch axis, its fixed dimensions (a script may loop over a batch its
    model cannot take); other tensors are the script's own, declared here.
    """
    for what, declared, model in (("input", signature.inputs, inputs), ("output", signature.outputs, outputs)):
        mine = {t["name"]: _tensor_of(t) for t in model}
        listed = ", ".join(str(t) for t in mine.values())
        for tensor in declared:
            theirs = mine.get(tensor.name)
            if theirs is None:
                if has_entry:
                    continue  # the entry script's own tensor
                raise SignatureMismatch(f"{where}: the model has no {what} {tensor.name!r} (its {what}s: {listed}); "
                                        "a module without an entry script answers with the model's own tensors")
            problem = _disagreement(tensor, theirs, skip_batch=has_entry)
            if problem is not None:
                raise SignatureMismatch(f"{where}: {what} {tensor} disagrees with the model's {theirs}: {problem}")
        if not has_entry:
            names = {t.name for t in declared}
            missing = [t for t in mine.values() if t.name not in names]
            if missing:
                raise SignatureMismatch(f"{where}: the model's {what} {missing[0]} is not declared")


def _disagreement(declared: Tensor, model: Tensor, *, skip_batch: bool) -> str | None:
    if declared.datatype != model.datatype:
        return f"datatype {declared.datatype} is not {model.datatype}"
    if not model.shape:  # a model that does not say (a scalar or an unknown rank): nothing to compare
        return None
    if len(declared.shape) != len(model.shape):
        return f"{len(declared.shape)} dimensions, the model has {len(model.shape)}"
    start = 1 if skip_batch else 0
    for axis in range(start, len(model.shape)):
        fixed, said = model.shape[axis], declared.shape[axis]
        if fixed != -1 and said != fixed:
            return f"dimension {axis} is {said}, the model's is {fixed}"
    return None


def _tensor_of(spec: dict) -> Tensor:
    return Tensor(spec["name"], spec["datatype"], tuple(int(d) for d in spec.get("shape") or ()))


def _tensors(doc: dict, key: str, where: str, error: type[BadDataError]) -> tuple[Tensor, ...]:
    raw = field(doc, key, list, where=where, error=error)
    if not raw or len(raw) > MAX_TENSORS:
        raise error(f"{where}: '{key}' must list between 1 and {MAX_TENSORS} tensors")
    tensors, seen = [], set()
    for item in raw:
        at = f"{where}.{key}"
        if not isinstance(item, dict):
            raise error(f"{at}: each tensor must be an object with name, datatype and shape")
        refuse_unknown_keys(item, ("name", "datatype", "shape"), where=at, error=error)
        name = field(item, "name", str, where=at, error=error)
        if not name or len(name) > MAX_NAME_CHARS:
            raise error(f"{at}: a tensor name must have 1 to {MAX_NAME_CHARS} characters")
        if name in seen:
            raise error(f"{at}: {name!r} is listed twice")
        seen.add(name)
        at = f"{at} {name!r}"
        datatype = field(item, "datatype", str, where=at, error=error)
        if datatype not in DATATYPES:
            raise error(f"{at}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
        shape = field(item, "shape", list, where=at, error=error)
        if len(shape) > MAX_DIMS or not all(isinstance(d, int) and not isinstance(d, bool) and -1 <= d <= 2**31
                                            for d in shape):
            raise error(f"{at}: shape must be a list of at most {MAX_DIMS} dimensions, each a size or -1 (free), "
                        f"got {shape!r}")
        tensors.append(Tensor(name, datatype, tuple(shape)))
    return tuple(tensors)
