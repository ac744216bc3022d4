"""Errors the server's services raise for the API to turn into HTTP statuses.

    EdgefleetError (fleet_protocol.errors)
    ├── BadDataError            → 400: the request or upload is bad or unsafe
    │   └── ... (protocol errors: manifest, unsafe path, message, bad model)
    ├── NotFoundError           → 404: the named thing does not exist
    ├── ConflictError           → 409: refused because of the current state (in use, already exists)
    └── TooLargeError           → 413: an upload over ``max_upload_bytes``
"""

from __future__ import annotations

from fleet_protocol.errors import EdgefleetError


class NotFoundError(EdgefleetError):
    code = "not_found"
    category = "request"


class ConflictError(EdgefleetError):
    code = "conflict"
    category = "request"


class TooLargeError(EdgefleetError):
    code = "too_large"
    category = "request"
