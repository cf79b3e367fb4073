"""Forgetting an entity, for deletion requests: its state, its pairs' and its snapshots.

A user, an item or an author leaves the store entirely: its own state, the state of
every pair it is part of (``user_item``, ``user_author``: a user's pairs, or an item's or
author's pairs with every user), and the snapshot of every event that touched one of
them (the states the label join would learn from). Both Redis stores keep the entities
of a snapshot in its ``k`` field; :func:`forget` finds the keys with ``SCAN`` (on every
node of a cluster: redis-py's cluster client scans each primary) and unlinks them. It
costs a pass over the store's snapshots, bounded by ``store.snapshot_ttl_s``: deletion
requests are rare. What the models learned from the entity's labels stays in them (an
online model does not unlearn); the entity's labels still in flight find no snapshot and
are not learned.

Examples
--------
>>> pair_parts("2:u1|i9")
('u1', 'i9')
>>> touches("user", "u1", "user_item", "2:u1|i9"), touches("item", "i9", "user_item", "2:u1|i9")
(True, True)
>>> touches("user", "u", "user_item", "2:u1|i9")
False
>>> entity_patterns("app:e", "item", "i*9")
['app:e:item:i\\\\*9', 'app:e:user_item:*|i\\\\*9']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "FORGETTABLE",
    "Forgotten",
    "entity_patterns",
    "forget",
    "glob_literal",
    "pair_parts",
    "touches",
]

Forgettable = Literal["user", "item", "author"]

#: The kinds of entity a deletion request names, and the pair kinds each is part of.
FORGETTABLE: dict[str, tuple[str, ...]] = {
    "user": ("user_item", "user_author"),
    "item": ("user_item",),
    "author": ("user_author",),
}


@dataclass
class Forgotten:
    """What :func:`forget` deleted."""

    entities: int = 0
    pairs: int = 0
    snapshots: int = 0


def glob_literal(text: str) -> str:
    """``text`` matched literally in a ``SCAN MATCH`` pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def pair_parts(pair_id: str) -> tuple[str, str] | None:
    """The user and the item (or author) of a pair id (``<len(user)>:<user>|<other>``)."""
    size, _, rest = pair_id.partition(":")
    if not size.isdigit() or len(rest) <= int(size) or rest[int(size)] != "|":
        return None
    n = int(size)
    return rest[:n], rest[n + 1 :]


def touches(kind: str, entity: str, other_kind: str, other_id: str) -> bool:
    """Whether entity ``(other_kind, other_id)`` is ``(kind, entity)`` or one of its pairs."""
    if other_kind == kind:
        return other_id == entity
    if other_kind not in FORGETTABLE.get(kind, ()):
        return False
    parts = pair_parts(other_id)
    return parts is not None and parts[0 if kind == "user" else 1] == entity


def entity_patterns(entity_prefix: str, kind: str, entity: str) -> list[str]:
    """``SCAN MATCH`` patterns that find the entity's key and its pairs' keys (a pair
    pattern may match more: :func:`touches` decides)."""
    literal = glob_literal(entity)
    patterns = [f"{entity_prefix}:{kind}:{literal}"]
    for pair in FORGETTABLE[kind]:
        if kind == "user":
            patterns.append(f"{entity_prefix}:{pair}:{len(entity)}:{literal}|*")
        else:
            patterns.append(f"{entity_prefix}:{pair}:*|{literal}")
    return patterns


def forget(
    client: Any,
    entity_prefix: str,
    snapshot_prefix: str,
    kind: str,
    entity: str,
    entities_of: Callable[[bytes], Iterable[tuple[str, str]]],
    chunk: int = 500,
) -> Forgotten:
    """Unlink ``(kind, entity)``, its pairs and the snapshots that touched any of them.

    ``entity_prefix``/``snapshot_prefix``: the stores' key prefixes of entities and
    snapshots (``<prefix>:<kind>:<id>``, ``<prefix>:<event id>``); ``entities_of``: the
    (kind, id) pairs of a snapshot's ``k`` field.
    """
    if kind not in FORGETTABLE:
        raise ValueError(f"only a user, an item or an author is forgotten, not {kind!r}")
    if not entity:
        raise ValueError("the entity id is empty")
    done = Forgotten()
    head = len(entity_prefix) + 1
    doomed: list[bytes] = []
    for pattern in entity_patterns(entity_prefix, kind, entity):
        for key in client.scan_iter(match=pattern, count=chunk):
            other_kind, _, other_id = key.decode()[head:].partition(":")
            if touches(kind, entity, other_kind, other_id):
                doomed.append(key)
                if other_kind == kind:
                    done.entities += 1
                else:
                    done.pairs += 1
    for key in client.scan_iter(match=f"{glob_literal(snapshot_prefix)}:*", count=chunk):
        raw = client.hget(key, "k")
        if raw and any(touches(kind, entity, k, i) for k, i in entities_of(raw)):
            doomed.append(key)
            done.snapshots += 1
    for start in range(0, len(doomed), chunk):
        client.unlink(*doomed[start : start + chunk])
    return done
