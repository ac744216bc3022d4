"""Certificate renewal messages on the device's ``renew`` and ``certificate`` topics; no I/O.

The agent publishes ``{"type": "renew", "csr": PEM}`` on its own ``renew``
topic; the server answers ``{"type": "certificate", "certificate": PEM}`` on
the device's ``certificate`` topic. Neither carries a device id: the topic
names the device, and the broker lets only the holder of that device's
current certificate write its ``renew`` topic or read its ``certificate``
topic (mutual TLS + ACL), which is what authenticates the request.
"""

from __future__ import annotations

from .canonical import canonical_json, parse_json_object
from .errors import MessageError

MAX_PEM_BYTES = 16 * 1024


def encode_renew_request(csr_pem: bytes) -> bytes:
    return canonical_json({"type": "renew", "csr": csr_pem.decode("ascii")})


def encode_certificate(cert_pem: bytes) -> bytes:
    return canonical_json({"type": "certificate", "certificate": cert_pem.decode("ascii")})


def parse_renew_request(payload: bytes) -> bytes:
    """The CSR (PEM bytes) from a renew message, or :class:`MessageError`."""
    return _field(payload, "renew", "csr", "-----BEGIN CERTIFICATE REQUEST-----")


def parse_certificate(payload: bytes) -> bytes:
    """The certificate (PEM bytes) from a certificate message, or :class:`MessageError`."""
    return _field(payload, "certificate", "certificate", "-----BEGIN CERTIFICATE-----")


def _field(payload: bytes, kind: str, key: str, marker: str) -> bytes:
    doc = parse_json_object(payload, what=f"{kind} message", max_bytes=MAX_PEM_BYTES + 256)
    if doc.get("type") != kind or set(doc) != {"type", key}:
        raise MessageError(f"{kind} message must be exactly {{'type': '{kind}', '{key}': PEM}}")
    value = doc[key]
    if not isinstance(value, str) or marker not in value or not value.isascii():
        raise MessageError(f"{kind} message: '{key}' must be a PEM ({marker.strip('-')})")
    return value.encode("ascii")
