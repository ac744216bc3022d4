"""The one retry policy of our HTTP clients: the agent's cloud client and the CLI both ask it.

It lives in the protocol package because both sides already import it and
the rules are part of the contract (a fleet server's 503 with Retry-After
means "come back then", for every client). Like the rest of the package it
does no I/O: :class:`RetryPolicy` only decides. The caller sleeps, reads
the clock and draws the jitter (``draw``, uniform in [0, 1)).

What is retried, and only while ``attempts`` (tries in all, the first
included) is not used up:

- ``NOT_SENT``: the connection could not be made (refused, DNS, TLS
  handshake, connect timeout, a full pool): any call, the request never left;
- ``LOST``: the connection failed after the request went out (reset,
  timeout waiting for the answer): idempotent calls only, since the server
  may have acted on it;
- an answer of 502, 503 or 504: idempotent calls only. A ``Retry-After``
  (seconds or an HTTP date, :func:`retry_after_s`) is obeyed when it is at
  most ``max_delay_s``; a longer one ends the retries at once;
- anything else (4xx, 500, 501): never; the same request gets the same answer.

Idempotent (:func:`is_idempotent`): GET, HEAD, OPTIONS, PUT and DELETE by
their method; a POST only when the caller says so (an OIP ``infer`` is: scoring
changes nothing on the server). The back-off before retry ``n`` is "full jitter":
``draw * min(max_delay_s, base_delay_s * 2 ** (n - 1))``, so clients that
failed together do not come back together; after a Retry-After it is that
many seconds plus ``draw * base_delay_s``.

MQTT links reconnect with the same full-jitter back-off (:meth:`RetryPolicy.backoff_s`), forever.

A dropped keep-alive connection is not a failure here: the connection pool
reconnects once, without asking this policy (:mod:`edge_agent.http_pool`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

NOT_SENT = "not_sent"
LOST = "lost"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRIED_STATUSES = frozenset({502, 503, 504})


def is_idempotent(method: str, *, declared: bool = False) -> bool:
    """Whether a call may be repeated: by its method, or ``declared`` by the caller for one POST route."""
    return declared or method.upper() in IDEMPOTENT_METHODS


def retry_after_s(value: str | None, *, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a date in the past: 0); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # tries in all, the first included
    base_delay_s: float = 0.2  # the ceiling of the first back-off, doubled for each retry after it
    max_delay_s: float = 5.0  # no wait is longer; a longer Retry-After ends the retries

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("a retry policy needs attempts >= 1 and 0 <= base_delay_s <= max_delay_s")

    def after_failure(self, attempt: int, failure: str, *, idempotent: bool, draw: float) -> float | None:
        """Seconds to wait before trying again after try number ``attempt`` (from 1) failed in transport
        (``NOT_SENT`` or ``LOST``); None: give up."""
        if attempt >= self.attempts or (failure == LOST and not idempotent):
            return None
        return self._backoff(attempt, draw)

    def after_status(self, attempt: int, status: int, *, idempotent: bool, draw: float,
                     retry_after: float | None = None) -> float | None:
        """Seconds to wait before trying again after try ``attempt`` was answered ``status``; None: give up.

        ``retry_after``: the answer's Retry-After in seconds (:func:`retry_after_s`), if it had one.
        """
        if attempt >= self.attempts or status not in RETRIED_STATUSES or not idempotent:
            return None
        if retry_after is None:
            return self._backoff(attempt, draw)
        if retry_after > self.max_delay_s:
            return None
        return retry_after + draw * self.base_delay_s

    def _backoff(self, attempt: int, draw: float) -> float:
        return self.backoff_s(attempt, draw)

    def backoff_s(self, attempt: int, draw: float) -> float:
        """The full-jitter wait before retry ``attempt`` (from 1), with no limit on attempts: for callers that
        never give up, such as a broker link reconnecting (:mod:`fleet_protocol.broker_urls`)."""
        return draw * min(self.max_delay_s, self.base_delay_s * 2 ** (max(1, attempt) - 1))
