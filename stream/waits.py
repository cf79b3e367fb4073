"""Waiting for Kafka and Redis: what stops a wait, what ends it for good, what it logs.

A worker waits for a dependency that is away (Redis restarting, a broker not yet
up) and resumes when it is back; but it never waits past a request to stop, and
it never waits for a dependency that refused its credentials: no retry fixes a
wrong password.

- :class:`StopFlag` is set by SIGTERM or SIGINT. Every wait of the worker
  watches it; a wait inside :meth:`StopFlag.waiting_for` (a blocking Kafka call
  of a client library) is interrupted by the signal itself.
- :class:`Stopped` ends a wait because the worker was asked to stop.
- :class:`Refused` ends the worker: a dependency refused its credentials or
  permissions; its message names the settings to fix.
- :class:`Outage` says since when a dependency has been out of reach, at most
  every few seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import redis
from kafka import errors as kafka_errors

from streamlearn.stream.config import mask_url

__all__ = [
    "LoggedErrors",
    "Outage",
    "Refused",
    "StopFlag",
    "Stopped",
    "describe",
    "kafka_refusal",
    "redis_refusal",
]

log = logging.getLogger(__name__)


class Stopped(Exception):
    """The worker was asked to stop while it waited for ``dependency``.

    >>> str(Stopped("redis"))
    'stopped while waiting for redis'
    """

    def __init__(self, dependency: str) -> None:
        super().__init__(f"stopped while waiting for {dependency}")
        self.dependency = dependency


class Refused(Exception):
    """``dependency`` refused the worker's credentials or permissions: retrying cannot help.

    >>> str(Refused("Redis at redis://127.0.0.1:6390/0", "WRONGPASS", "check redis.username"))
    'Redis at redis://127.0.0.1:6390/0 refused the worker: WRONGPASS. Fix: check redis.username'
    """

    def __init__(self, dependency: str, detail: str, fix: str) -> None:
        super().__init__(f"{dependency} refused the worker: {detail}. Fix: {fix}")
        self.dependency, self.detail, self.fix = dependency, detail, fix


class StopFlag:
    """Set once the worker is asked to stop; every wait of the worker watches it.

    :meth:`wait` sleeps until the flag is set or the time is up. Inside
    :meth:`waiting_for` (a blocking call into a client library, such as a Kafka
    client's bootstrap) the signal handler :meth:`on_signal` raises
    :class:`Stopped` in the main thread, so the call is given up at once. Once
    set, :meth:`bound` caps the remaining waits (the last checkpoint's) to
    ``grace_s`` after the request.

    >>> import os, signal
    >>> flag = StopFlag(grace_s=1.0)
    >>> flag.wait(0.01), flag.bound(30.0)
    (False, 30.0)
    >>> previous = signal.signal(signal.SIGUSR2, flag.on_signal)
    >>> try:
    ...     with flag.waiting_for("Kafka at b:9092"):
    ...         os.kill(os.getpid(), signal.SIGUSR2)
    ...         flag.wait(5.0)  # not reached: the signal ends the wait
    ... except Stopped as stop:
    ...     print(stop)
    ... finally:
    ...     _ = signal.signal(signal.SIGUSR2, previous)
    stopped while waiting for Kafka at b:9092
    >>> flag.is_set(), flag.wait(5.0), flag.bound(30.0) <= 1.0
    (True, True, True)
    """

    def __init__(self, grace_s: float = 1.5) -> None:
        self.grace_s = grace_s
        self._event = threading.Event()
        self._since: float | None = None
        self._waiting_for: str | None = None

    def set(self) -> None:
        if self._since is None:
            self._since = time.monotonic()
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` or until the flag is set; True when it is set."""
        return self._event.wait(seconds)

    def bound(self, timeout_s: float) -> float:
        """``timeout_s``, or what is left of the grace period once the flag is set."""
        if self._since is None:
            return timeout_s
        return min(timeout_s, max(0.001, self._since + self.grace_s - time.monotonic()))

    def on_signal(self, signum: int, frame: Any) -> None:
        """The SIGTERM and SIGINT handler: set the flag; inside a blocking call, end it."""
        self.set()
        if self._waiting_for is not None and threading.current_thread() is threading.main_thread():
            dependency, self._waiting_for = self._waiting_for, None
            raise Stopped(dependency)

    @contextmanager
    def waiting_for(self, dependency: str) -> Iterator[None]:
        """A blocking call on ``dependency`` that a stop request ends (main thread only).

        A request made before the call does not end it: the last checkpoint of a
        stopping worker runs its calls, bounded by :meth:`bound`.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        outer, self._waiting_for = self._waiting_for, dependency
        try:
            yield
        finally:
            self._waiting_for = outer


def describe(error: BaseException) -> str:
    """An error for a log line: its class and its message.

    >>> describe(ConnectionRefusedError(111, "Connection refused"))
    'ConnectionRefusedError: [Errno 111] Connection refused'
    >>> describe(kafka_errors.KafkaTimeoutError("Unable to bootstrap"))
    'KafkaTimeoutError: Unable to bootstrap'
    """
    text = str(error)
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


_REDIS_CREDENTIALS = (
    "check the Redis user and password: redis.username (YAML or STREAMLEARN_REDIS__USERNAME)"
    " and STREAMLEARN_REDIS__PASSWORD (environment only)"
)
_REDIS_ACL = (
    "grant the Redis user (redis.username) the worker's keys (store.key_prefix, then ':*')"
    " and commands in its ACL, or set redis.username and STREAMLEARN_REDIS__PASSWORD to a"
    " user that has them"
)


def redis_refusal(error: BaseException, url: str) -> Refused | None:
    """A :class:`Refused` when ``error`` says Redis refused our credentials or permissions.

    >>> refused = redis_refusal(redis.AuthenticationError("invalid password"), "redis://:pw@h/0")
    >>> refused.dependency, refused.detail, "STREAMLEARN_REDIS__PASSWORD" in refused.fix
    ('Redis at redis://:***@h/0', 'AuthenticationError: invalid password', True)
    >>> redis_refusal(redis.ResponseError("NOPERM this user has no permissions"), "r").detail
    'ResponseError: NOPERM this user has no permissions'
    >>> redis_refusal(redis.ConnectionError("Connection refused"), "redis://h/0") is None
    True
    """
    where = f"Redis at {mask_url(url)}"
    head = str(error).split(" ", 1)[0].upper()
    if isinstance(error, redis.exceptions.NoPermissionError) or (
        isinstance(error, redis.ResponseError) and head == "NOPERM"
    ):
        return Refused(where, describe(error), _REDIS_ACL)
    if isinstance(
        error, redis.AuthenticationError | redis.exceptions.AuthenticationWrongNumberOfArgsError
    ) or (isinstance(error, redis.ResponseError) and head in {"WRONGPASS", "NOAUTH"}):
        return Refused(where, describe(error), _REDIS_CREDENTIALS)
    return None


_KAFKA_CREDENTIALS = (
    "check the SASL settings: kafka.sasl_username (STREAMLEARN_KAFKA__SASL_USERNAME),"
    " STREAMLEARN_KAFKA__SASL_PASSWORD, kafka.sasl_mechanism and kafka.security_protocol"
)
_KAFKA_ACLS = {
    kafka_errors.TopicAuthorizationFailedError: "kafka.topics.* (its topics)",
    kafka_errors.GroupAuthorizationFailedError: "kafka.group_id (its consumer group)",
    kafka_errors.TransactionalIdAuthorizationFailedError: (
        "kafka.transactions (its transactional id, <group_id>-<worker name>)"
    ),
    kafka_errors.ClusterAuthorizationFailedError: (
        "the cluster (creating topics: kafka.topics.create)"
    ),
}
#: librdkafka error names (``LibrdkafkaError`` messages start with them) of refusals.
_RDKAFKA_REFUSALS = {
    "_AUTHENTICATION": None,
    "SASL_AUTHENTICATION_FAILED": None,
    "TOPIC_AUTHORIZATION_FAILED": kafka_errors.TopicAuthorizationFailedError,
    "GROUP_AUTHORIZATION_FAILED": kafka_errors.GroupAuthorizationFailedError,
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED": kafka_errors.TransactionalIdAuthorizationFailedError,
    "CLUSTER_AUTHORIZATION_FAILED": kafka_errors.ClusterAuthorizationFailedError,
}


def kafka_refusal(error: BaseException | None, bootstrap: str) -> Refused | None:
    """A :class:`Refused` when ``error`` says Kafka refused our credentials or permissions.

    >>> refused = kafka_refusal(kafka_errors.SaslAuthenticationFailedError("bad"), "b:9092")
    >>> refused.dependency, "STREAMLEARN_KAFKA__SASL_PASSWORD" in refused.fix
    ('Kafka at b:9092', True)
    >>> print(kafka_refusal(kafka_errors.GroupAuthorizationFailedError(), "b:9092"))
    ... # doctest: +ELLIPSIS
    Kafka at b:9092 refused the worker: ...Fix: grant the SASL user ... kafka.group_id ...
    >>> kafka_refusal(kafka_errors.KafkaTimeoutError("Unable to bootstrap"), "b:9092") is None
    True
    """
    if error is None:
        return None
    kind: Any = type(error)
    name = str(error).split(":", 1)[0]
    if name in _RDKAFKA_REFUSALS:
        kind = _RDKAFKA_REFUSALS[name] or kafka_errors.SaslAuthenticationFailedError
    where = f"Kafka at {bootstrap}"
    if issubclass(
        kind, kafka_errors.SaslAuthenticationFailedError | kafka_errors.IllegalSaslStateError
    ):
        return Refused(where, describe(error), _KAFKA_CREDENTIALS)
    if issubclass(kind, kafka_errors.UnsupportedSaslMechanismError):
        return Refused(where, describe(error), "set kafka.sasl_mechanism to one the broker enables")
    for acl, what in _KAFKA_ACLS.items():
        if issubclass(kind, acl):
            fix = (
                f"grant the SASL user (kafka.sasl_username) access to {what}, or change the"
                " setting to what it may use"
            )
            return Refused(where, describe(error), fix)
    return None


class LoggedErrors(logging.Filter):
    """The last exception kafka-python logged while :meth:`watching` (its bootstrap logs
    each failed attempt, a refused SASL login included, then times out without a cause).

    >>> errors = LoggedErrors()
    >>> with errors.watching():
    ...     logging.getLogger("kafka.net.manager").error("Connection failed: %s", OSError("no"))
    >>> errors.last
    OSError('no')
    """

    LOGGERS = ("kafka.net.manager", "kafka.net.connection", "kafka.conn")

    #: The most errors kept (a bootstrap attempt logs a few per connection).
    KEEP = 100

    def __init__(self) -> None:
        super().__init__()
        self.last: BaseException | None = None
        #: Every error logged, oldest first: a refused SASL login shows among connection
        #: errors (the broker may close the connection before its answer is read).
        self.seen: list[BaseException] = []

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        for arg in args:  # the bootstrap's own timeout says nothing of the cause
            if isinstance(arg, BaseException) and not isinstance(
                arg, kafka_errors.KafkaTimeoutError
            ):
                self.last = arg
                if len(self.seen) < self.KEEP:
                    self.seen.append(arg)
        return True

    @contextmanager
    def watching(self) -> Iterator[LoggedErrors]:
        loggers = [logging.getLogger(name) for name in self.LOGGERS]
        for logger in loggers:
            logger.addFilter(self)
        try:
            yield self
        finally:
            for logger in loggers:
                logger.removeFilter(self)


class Outage:
    """Since when a dependency has been out of reach; says so at most every ``every_s``.

    >>> outage = Outage("Redis at redis://127.0.0.1:6390/0", every_s=5.0)
    >>> print(outage.failed(ConnectionRefusedError("refused"), now=100.0, wall=0.0))
    ... # doctest: +ELLIPSIS
    Redis at redis://127.0.0.1:6390/0 unreachable since ... (0 s): ConnectionRefusedError: refused
    >>> outage.failed(ConnectionRefusedError("refused"), now=103.0, wall=0.0) is None
    True
    >>> outage.failed(ConnectionRefusedError("refused"), now=112.4, wall=0.0)[:55]
    'Redis at redis://127.0.0.1:6390/0 unreachable since 00:'
    >>> outage.recovered(now=115.0)
    'Redis at redis://127.0.0.1:6390/0 is back after 15 s (3 failed attempts)'
    >>> outage.recovered(now=116.0) is None
    True
    """

    def __init__(self, what: str, every_s: float = 5.0) -> None:
        self.what = what
        self.every_s = every_s
        self.since: float | None = None
        self.since_wall = 0.0
        self.attempts = 0
        self._said = -math.inf

    def begin(self, now: float | None = None, wall: float | None = None) -> None:
        """An attempt starts: the outage, if this one fails, runs from now (unless it runs)."""
        if self.since is None:
            self.since = time.monotonic() if now is None else now
            self.since_wall = time.time() if wall is None else wall

    def failed(
        self, error: BaseException, now: float | None = None, wall: float | None = None
    ) -> str | None:
        """Count a failed attempt; the line to log, when one is due."""
        now = time.monotonic() if now is None else now
        if self.since is None:
            self.begin(now, wall)
        self.attempts += 1
        if now - self._said < self.every_s:
            return None
        self._said = now
        since = self.since
        assert since is not None  # set by begin above
        clock = datetime.fromtimestamp(self.since_wall).strftime("%H:%M:%S")
        return f"{self.what} unreachable since {clock} ({now - since:.0f} s): {describe(error)}"

    def recovered(self, now: float | None = None) -> str | None:
        """Forget the outage; the line to log when there was one."""
        if self.since is None or not self.attempts:
            self.since = None
            return None
        now = time.monotonic() if now is None else now
        line = (
            f"{self.what} is back after {now - self.since:.0f} s ({self.attempts} failed attempts)"
        )
        self.since, self.attempts, self._said = None, 0, -math.inf
        return line
