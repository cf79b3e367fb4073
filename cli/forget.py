"""``streamlearn forget``: a user, an item or an author leaves the interaction store.

For deletion requests: ``streamlearn forget --user ID`` (or ``--item``, ``--author``)
deletes the entity's state, the state of every pair it is part of and the snapshots of
the events that touched them, from the store the configuration names (``redis.url``;
on every node with ``redis.cluster``). What the models learned stays in them; see
:mod:`features.forget`. Exit 2 for a request that names no entity or more than one,
1 when Redis fails.

Examples
--------
>>> from typer.testing import CliRunner
>>> import typer
>>> app = typer.Typer()
>>> _ = app.command()(forget)
>>> result = CliRunner().invoke(app, ["--user", "u1", "--item", "i1"])
>>> result.exit_code, "exactly one" in result.output
(2, True)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import redis
import typer
from rich.console import Console

from streamlearn.cli.common import ConfigOption, settings_or_exit
from streamlearn.stream.config import mask_url
from streamlearn.stream.stores import forget_entity

__all__ = ["forget"]

_out = Console(stderr=False)

Id = Annotated[str | None, typer.Option(help="Its id, as in the events.")]


def forget(
    user: Id = None,
    item: Id = None,
    author: Id = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Delete a user's, an item's or an author's interaction state, its pairs' and the
    snapshots of its events (a deletion request); the models keep what they learned."""
    named = {kind: value for kind, value in (("user", user), ("item", item),
                                             ("author", author)) if value is not None}  # fmt: skip
    if len(named) != 1 or not next(iter(named.values()), ""):
        _out.print(
            "name exactly one non-empty entity: --user ID, --item ID or --author ID",
            style="red",
            markup=False,
        )
        raise typer.Exit(2)
    ((kind, entity),) = named.items()
    settings = settings_or_exit(config)
    try:
        done = forget_entity(settings, kind, entity)
    except redis.RedisError as error:
        where = mask_url(settings.redis.url)
        _out.print(f"Redis at {where} failed: {mask_url(str(error))}", style="red", markup=False)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps({"kind": kind, "id": entity, **asdict(done)}))
        return
    _out.print(
        f"{kind} {entity!r} forgotten: {done.entities} state, {done.pairs} pair states,"
        f" {done.snapshots} snapshots deleted",
        markup=False,
    )
