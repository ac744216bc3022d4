"""The two error families every caller can act on.

    EdgefleetError
    ├── BadDataError            the other side sent bad or unsafe data: do not retry
    │   ├── MessageError        a message or request does not match its schema
    │   ├── ManifestError       a bundle manifest is malformed
    │   ├── UnsafePathError     a path would escape its directory
    │   ├── SignatureError      missing, unknown or invalid signature
    │   ├── DigestMismatchError bytes do not match the digest or size promised
    │   ├── RollbackError       a version or generation that does not go up
    │   └── ExpiredError        a signed document past its expiry
    └── TransportError          the transport failed: retry later

Each error carries a stable ``code`` (machine readable, for grouping on the
server) and a ``category`` (download, verification, load, health, resources,
message) so that reported failures can be grouped by what went wrong.
"""

from __future__ import annotations


class EdgefleetError(Exception):
    """Base of every error edgefleet raises on purpose."""

    code = "error"
    category = "internal"

    def __init__(self, message: str, *, code: str | None = None, category: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code
        if category is not None:
            self.category = category

    def as_report(self) -> dict:
        """The ``{code, category, message}`` triple used in reported state and events."""
        return {"code": self.code, "category": self.category, "message": str(self)}


class BadDataError(EdgefleetError):
    """The other side sent bad or unsafe data; retrying will not help."""

    code = "bad_data"
    category = "verification"


class MessageError(BadDataError):
    code = "malformed_message"
    category = "message"


class ManifestError(BadDataError):
    code = "malformed_manifest"


class UnsafePathError(BadDataError):
    code = "unsafe_path"


class SignatureError(BadDataError):
    code = "bad_signature"


class DigestMismatchError(BadDataError):
    code = "digest_mismatch"


class RollbackError(BadDataError):
    code = "rollback"


class ExpiredError(BadDataError):
    code = "expired"


class TransportError(EdgefleetError):
    """The transport failed (timeout, dropped connection, full disk); retry later."""

    code = "transport"
    category = "download"
