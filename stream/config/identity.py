"""The ``worker`` section: who a worker is within its group.

A worker's name is its static group member id (``group.instance.id``), the suffix of
its transactional id (``<group_id>-<name>``), the key of its checkpoints in Redis and
its ``client_id`` suffix, so two workers of one group must never share it. ``{hostname}``
in the name stands for the machine's (a container's) host name: the compose file sets
``STREAMLEARN_WORKER__NAME={hostname}``, so ``docker compose up --scale worker=3`` gives
three members, each with its own transactions and checkpoints, and a container that
restarts keeps its name. ``streamlearn run --name`` overrides it.

Examples
--------
>>> WorkerConfig().resolved_name()
'worker-0'
>>> WorkerConfig(name="{hostname}").resolved_name(hostname="3f9a1c2b7d4e")
'3f9a1c2b7d4e'
>>> WorkerConfig(name="scorer-{hostname}").resolved_name(hostname="Box 7.local")
'scorer-Box_7.local'
"""

from __future__ import annotations

import re
import socket

from pydantic import BaseModel, Field

from streamlearn.stream.config.connections import FROZEN

__all__ = ["HOSTNAME", "WorkerConfig", "member_name"]

#: The placeholder of the host name in ``worker.name``.
HOSTNAME = "{hostname}"


def member_name(template: str, hostname: str | None = None) -> str:
    """``template`` with ``{hostname}`` replaced by the host name (characters other than
    letters, digits, ``.``, ``_`` and ``-`` become ``_``).

    >>> member_name("w-{hostname}", hostname="a/b")
    'w-a_b'
    """
    host = re.sub(r"[^A-Za-z0-9._-]", "_", hostname or socket.gethostname()) or "localhost"
    return template.replace(HOSTNAME, host)


class WorkerConfig(BaseModel):
    model_config = FROZEN

    name: str = Field(
        default="worker-0",
        min_length=1,
        max_length=200,
        pattern=r"^([A-Za-z0-9._-]|\{hostname\})+$",
        description=(
            "The worker's name, unique within its group: static member id, transactional"
            " id suffix, checkpoint key. {hostname} stands for the host (container) name."
        ),
    )

    def resolved_name(self, hostname: str | None = None) -> str:
        """The name with ``{hostname}`` replaced (:func:`member_name`)."""
        return member_name(self.name, hostname)
