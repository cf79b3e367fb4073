"""Delivery outcomes of a sink: which sends the broker acknowledged, refused, or lost.

Shared by both adapters (:mod:`stream.kafka_io`, :mod:`stream.rdkafka_io`); no
Kafka client is imported here. A send is counted when it is handed to the
client and settled when the client reports its outcome, in the client's own
thread; :meth:`Deliveries.check` waits for all of them.

Examples
--------
>>> from streamlearn.stream.edge import EdgeError
>>> refusal_reason(EdgeError("too big", errno=10)), refusal_reason(EdgeTimeoutError())
('too_large', None)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from streamlearn.stream.edge import EdgeTimeoutError, Headers, RefusedRecord, UndeliveredError

__all__ = ["REFUSALS", "Deliveries", "Output", "refusal_reason"]

#: Why the broker refused an output for itself, by error code: sending it again
#: cannot succeed (unless the topic's configuration changes). Anything else (a
#: timeout, the broker away, an aborted transaction) is not the record's fault.
REFUSALS: dict[int, str] = {
    10: "too_large",  # MESSAGE_TOO_LARGE (broker), MSG_SIZE_TOO_LARGE (librdkafka, local)
    18: "too_large",  # RECORD_LIST_TOO_LARGE
    87: "invalid_record",  # INVALID_RECORD (e.g. a compacted topic and no key)
}

#: A send: ``(topic, key, value, headers)``.
Output = tuple[str, bytes | None, bytes, Headers]


def refusal_reason(error: BaseException) -> str | None:
    """Why the broker refused a record for itself (:data:`REFUSALS`), or None.

    Errors of either client carry the Kafka error code in ``errno``.
    """
    errno = getattr(error, "errno", None)
    return REFUSALS.get(errno) if isinstance(errno, int) else None


class Deliveries:
    """The sends since the last check, until the broker acknowledges or refuses each.

    The producer settles sends in its own thread; :meth:`check` waits for all
    of them and raises :class:`~stream.edge.UndeliveredError` for those that
    failed. A send that failed for itself (:func:`refusal_reason`) is kept, with
    its record, in the error's ``refused``, so that the caller may send it again
    or drop it. ``timeout_error`` builds the error of a check that waited too
    long (an adapter may give its client's own).

    >>> from streamlearn.stream.edge import EdgeError
    >>> deliveries = Deliveries()
    >>> for _ in range(3):
    ...     deliveries.sent()
    >>> deliveries.delivered()
    >>> deliveries.failed(EdgeTimeoutError("expired"))
    >>> refused = ("dead-letter", b"events:0:7", b"{}", None)
    >>> deliveries.failed(EdgeError("too large", errno=10), refused)
    >>> try:
    ...     deliveries.check(timeout_s=1.0)
    ... except UndeliveredError as error:
    ...     print(error.count, "undelivered,", [(r.key, r.reason) for r in error.refused])
    2 undelivered, [(b'events:0:7', 'too_large')]
    >>> deliveries.check(timeout_s=1.0)  # each failure is raised once
    """

    def __init__(self, timeout_error: Callable[[str], Exception] = EdgeTimeoutError) -> None:
        self._settled_changed = threading.Condition()
        self._timeout_error = timeout_error
        self._sent = 0
        self._settled = 0
        self._failed = 0
        self._first_failure: BaseException | None = None
        self._refused: list[RefusedRecord] = []

    def sent(self) -> None:
        """Count one send whose outcome :meth:`delivered` or :meth:`failed` will report."""
        self._sent += 1

    def delivered(self, _metadata: Any = None) -> None:
        with self._settled_changed:
            self._settled += 1
            self._settled_changed.notify_all()

    def failed(self, error: BaseException, output: Output | None = None) -> None:
        """Settle a send that failed; ``output``: its ``(topic, key, value, headers)``."""
        reason = refusal_reason(error) if output is not None else None
        with self._settled_changed:
            self._settled += 1
            self._failed += 1
            if self._first_failure is None:
                self._first_failure = error
            if reason is not None and output is not None:
                topic, key, value, headers = output
                self._refused.append(RefusedRecord(topic, key, value, headers, reason, str(error)))
            self._settled_changed.notify_all()

    def check(self, timeout_s: float) -> None:
        """Wait until every send is settled; raise if any failed. Starts afresh."""
        with self._settled_changed:
            if not self._settled_changed.wait_for(lambda: self._settled >= self._sent, timeout_s):
                waiting = self._sent - self._settled
                raise self._timeout_error(f"{waiting} records unacknowledged after {timeout_s:g} s")
            failed, first, refused = self._failed, self._first_failure, tuple(self._refused)
            self.reset()
        if failed:
            raise UndeliveredError(failed, first, refused)

    def reset(self) -> None:
        """Forget every send (their transaction was aborted, or the producer closed)."""
        self._sent = self._settled = self._failed = 0
        self._first_failure = None
        self._refused = []
