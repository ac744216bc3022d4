"""Answers by class for an A/B comparison: which output of a result is the class, counted over every row.

A module may declare its answer in its ``config``: ``"answers":
{"label_output": NAME}`` (each row counts under its value) or
``{"probability_output": NAME}`` (each row counts under the index of its
largest value); :func:`declared_output` parses it, here and at build
(:mod:`edgefleet_runtime.module_config`). A declared output missing from a result
is not counted. Beside it (or alone) ``"class_names": ["setosa", ...]`` names
the classes of a model that answers class indices, index 0 first
(:func:`declared_class_names`): feedback then takes a label as the index or
as its name (:mod:`edgefleet_runtime.feedback`). Without a declaration the agent decides from the result
itself (outputs in the order the model or entry script returns them), once
per module and again only if that output goes missing:

1. **a label output**: the first output of integers, booleans or strings
   with one value per row (shape ``[n]``, ``[n, 1]`` or a scalar). Every row
   counts once under its value. Converted classifiers put their label first
   or beside a probability output (skl2onnx: ``output_label``,
   ``output_probability``; onnxmltools for LightGBM: ``label``,
   ``probabilities``); either way the label is what is counted.
2. otherwise **a score per class**: the first floating-point output with at
   least two values per row (probabilities or logits, ``[n, k]``). Every
   row counts once under the index of its largest value.
3. otherwise nothing is counted (a regressor with one value per row, a
   ZipMap dictionary without a label beside it): its answers are not classes.

Only requests an A/B split routed are counted (the split's score function
calls :meth:`AnswerCounts.add`); requests to ``/versions/{v}`` are not.
A module that answers free text cannot make this grow: at most
:data:`MAX_LABELS` classes are kept per report, later ones count under
``"other"``, and labels are cut at :data:`MAX_LABEL_CHARS`. Counting never
fails a request: a result it cannot read is not counted.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from fleet_protocol.errors import BadDataError
from fleet_protocol import feedback
from fleet_protocol.feedback import label_text
from fleet_protocol.fields import refuse_unknown_keys

MAX_LABELS = 50
MAX_LABEL_CHARS = feedback.MAX_LABEL_CHARS  # classes are cut here, as labels that come back are
OTHER = "other"
_LABEL, _SCORES = "label", "scores"
DECLARATIONS = {"label_output": _LABEL, "probability_output": _SCORES}
CLASS_NAMES = "class_names"


def declared_output(config: dict) -> tuple[str, str] | None:
    """``(output name, "label" | "scores")`` from ``config["answers"]``, None without one; BadDataError if bad
    (the class names included: :func:`declared_class_names`)."""
    section = config.get("answers")
    if section is None:
        return None
    if not isinstance(section, dict):
        raise BadDataError(f"config.answers must be an object, e.g. {{\"label_output\": \"label\"}}, got {section!r}")
    refuse_unknown_keys(section, [*DECLARATIONS, CLASS_NAMES], where="config.answers", error=BadDataError)
    declared_class_names(config)
    outputs = {key: value for key, value in section.items() if key != CLASS_NAMES}
    if not outputs and CLASS_NAMES in section:
        return None
    if len(outputs) != 1 or not all(isinstance(v, str) and v for v in outputs.values()):
        raise BadDataError("config.answers must name one output: label_output or probability_output, "
                           f"as a non-empty string, got {section!r}")
    (key, name), = outputs.items()
    return name, DECLARATIONS[key]


def declared_class_names(config: dict) -> tuple[str, ...] | None:
    """``config["answers"]["class_names"]``: the name of class index 0, 1, ...; None without; BadDataError if bad."""
    section = config.get("answers")
    names = section.get(CLASS_NAMES) if isinstance(section, dict) else None
    if names is None:
        return None
    if (not isinstance(names, list) or not 2 <= len(names) <= MAX_LABELS or len(set(names)) != len(names)
            or not all(isinstance(n, str) and 0 < len(n) <= MAX_LABEL_CHARS and not n.isdigit() for n in names)):
        raise BadDataError(f"config.answers.class_names must list the name of each class index, 0 first: 2.."
                           f"{MAX_LABELS} different strings of 1..{MAX_LABEL_CHARS} characters, not numbers, "
                           f"got {names!r:.120}")
    return tuple(names)


def choose(outputs: dict) -> tuple[str | None, str | None]:
    """``(output name, "label" | "scores")`` by the rule above, or ``(None, None)``."""
    scores = None
    for name, value in outputs.items():
        array = np.asarray(value)
        kind = array.dtype.kind
        one_per_row = array.ndim <= 1 or (array.ndim == 2 and array.shape[1] == 1)
        if one_per_row and array.size and (kind in "iubSU" or (kind == "O" and isinstance(array.flat[0], (str, bytes)))):
            return name, _LABEL
        if scores is None and kind == "f" and array.ndim >= 2 and array.size >= 2 * len(array) > 0:
            scores = name
    return (scores, _SCORES) if scores is not None else (None, None)


class AnswerCounts:
    """Answers by class of one version since the last :meth:`take` (no lock: a rare lost count is accepted)."""

    __slots__ = ("counts", "output", "class_names", "_mode", "_declared")

    def __init__(self, declared: tuple[str, str] | None = None, class_names: tuple[str, ...] | None = None) -> None:
        self.counts: dict[str, int] = {}
        self.class_names = class_names  # the name of each class index, when the module declares them
        self._declared = declared is not None
        # the output counted, as the module declared it or the rule chose it
        self.output, self._mode = declared if declared is not None else (None, None)

    def _labels(self, outputs: dict) -> np.ndarray | None:
        """The class of every row of ``outputs`` (by the declared output or the rule), None if it has none."""
        value = outputs.get(self.output) if self.output is not None else None
        if value is None:
            if self._declared:
                return None
            self.output, self._mode = choose(outputs)
            if self.output is None:
                return None
            value = outputs[self.output]
        array = np.asarray(value)
        if self._mode == _LABEL:
            return array.reshape(-1)
        return array.reshape(len(array), -1).argmax(axis=1)

    def classes(self, outputs: dict) -> np.ndarray | None:
        """The class of every row, as counted and owned by the caller (the label output's values copied, or the
        argmax indices), for joining labels later; None if not readable. Text (:func:`label_text`) is the
        caller's to make, when it needs it: this runs on the scoring path."""
        try:
            labels = self._labels(outputs)
        except Exception:  # noqa: BLE001 - statistics never fail a request
            return None
        # a label output is returned as a view of the model's array, which an entry script may reuse
        return labels.copy() if labels is not None and self._mode == _LABEL else labels

    def add(self, outputs: dict) -> None:
        try:
            labels = self._labels(outputs)
            if labels is None:
                return
            if labels.dtype.kind in "iub" and labels.size > 1:
                values, numbers = np.unique(labels, return_counts=True)
                found = zip(values.tolist(), numbers.tolist())
            else:
                found = Counter(labels.tolist()).items()
            counts = self.counts
            for label, number in found:
                key = label_text(label)
                if key not in counts and len(counts) >= MAX_LABELS:
                    key = OTHER
                counts[key] = counts.get(key, 0) + number
        except Exception:  # noqa: BLE001 - statistics never fail a request
            return

    def take(self) -> tuple[str | None, dict[str, int]]:
        """``(output counted, counts)`` since the last call; the counts start again from empty."""
        counts, self.counts = self.counts, {}
        return self.output, counts
