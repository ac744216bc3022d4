"""What several route modules share: query and form values parsed into clear 400s, and audit notes."""

from __future__ import annotations

from typing import Any

from fastapi import UploadFile

from fleet_protocol.canonical import parse_json_object
from fleet_protocol.errors import BadDataError

from ...audit import note
from ...errors import TooLargeError


def parse_tag_filters(values: list[str] | None) -> dict[str, str]:
    """``["site=lab", "tier=a"]`` → ``{"site": "lab", "tier": "a"}``."""
    tags = {}
    for value in values or []:
        key, sep, tag_value = value.partition("=")
        if not sep or not key:
            raise BadDataError(f"tag filter {value!r} must look like key=value")
        tags[key] = tag_value
    return tags


def parse_json_form(value: str | None, *, what: str, strings_only: bool = False) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    doc = parse_json_object(value, what=what, max_bytes=1024 * 1024)  # Starlette's own limit on a form field
    if strings_only and not all(isinstance(v, str) for v in doc.values()):
        raise BadDataError(f"{what} must map strings to strings")
    return doc


def read_upload(upload: UploadFile, *, limit_bytes: int) -> bytes:
    data = upload.file.read(limit_bytes + 1)
    if len(data) > limit_bytes:
        raise TooLargeError(f"the upload is larger than the server's limit of {limit_bytes} bytes")
    return data


def read_baseline(upload: UploadFile | None, *, limit_bytes: int) -> tuple[str, bytes] | None:
    """A drift baseline upload as ``(file name, bytes)`` (its name says its format), or None."""
    if upload is None:
        return None
    return upload.filename or "baseline", read_upload(upload, limit_bytes=limit_bytes)


def drift_note(record: dict) -> dict:
    """What the audit log notes of a registration's drift reference (nothing without one)."""
    return {"drift_reference": record["drift_reference"]["id"]} if record.get("drift_reference") else {}


def note_target(request, body) -> None:
    """What a deployment or rollout request aims at, in its audit entry (refused ones too)."""
    note(request, module=body.module, version=body.version, devices=body.devices, selector=body.selector,
         group=body.group)
