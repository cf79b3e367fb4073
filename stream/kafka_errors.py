"""kafka-python's errors as the edge's: raised at the boundary of every kafka-python call.

An error of kafka-python leaves :mod:`stream.kafka_io` and :mod:`stream.topics`
as an instance of a class that derives from both its own class and
:class:`stream.edge.EdgeError`: the worker catches the edge's error, while
the text, the ``errno`` and ``retriable`` of the original stay as they were,
and so does what callers that know kafka-python test it for (its class, e.g.
``MessageSizeTooLargeError``, which the ``produce`` command names).

Examples
--------
>>> from kafka.errors import KafkaError, MessageSizeTooLargeError
>>> error = as_edge_error(MessageSizeTooLargeError("over 1 MiB"))
>>> isinstance(error, EdgeError), isinstance(error, MessageSizeTooLargeError)
(True, True)
>>> str(error), error.errno, error.retriable
('[Error 10] MessageSizeTooLargeError: over 1 MiB', 10, False)
>>> try:
...     with edge_errors():
...         raise KafkaError("broker away")
... except EdgeError as caught:
...     print(caught)
KafkaError: broker away
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from kafka.errors import KafkaError

from streamlearn.stream.edge import EdgeError

__all__ = ["as_edge_error", "edge_errors", "raising_edge_errors"]

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)

_KINDS: dict[type[BaseException], type[EdgeError]] = {}


def _edge_kind(kind: type[BaseException]) -> type[EdgeError]:
    """The class deriving from ``kind`` and :class:`EdgeError`, named as ``kind``."""
    edge = _KINDS.get(kind)
    if edge is None:
        edge = type(kind.__name__, (kind, EdgeError), {"__module__": kind.__module__})
        _KINDS[kind] = edge
    return edge


def as_edge_error(error: BaseException) -> EdgeError:
    """``error`` (a kafka-python error) as an :class:`EdgeError` of its own class."""
    if isinstance(error, EdgeError):
        return error
    converted = _edge_kind(type(error)).__new__(_edge_kind(type(error)))
    converted.__dict__.update(getattr(error, "__dict__", {}))
    converted.args = error.args
    converted.__cause__ = error.__cause__
    converted.__traceback__ = error.__traceback__
    return converted


@contextmanager
def edge_errors() -> Iterator[None]:
    """Raise kafka-python's errors in the block as edge errors (:func:`as_edge_error`)."""
    try:
        yield
    except KafkaError as exc:
        if isinstance(exc, EdgeError):
            raise
        raise as_edge_error(exc) from None


def _wrapped(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        with edge_errors():
            return method(*args, **kwargs)

    return wrapped


def raising_edge_errors(cls: C) -> C:
    """Decorate an adapter class: kafka-python's errors leave its methods as edge errors.

    Every public method and the constructor are wrapped (:func:`edge_errors`);
    private ones are reached only through those.
    """
    for name, attribute in list(vars(cls).items()):
        if callable(attribute) and (name == "__init__" or not name.startswith("_")):
            setattr(cls, name, _wrapped(attribute))
    return cls
