"""``python -m cli``: the ``streamlearn`` command, from a checkout without installing it."""

from __future__ import annotations

from cli.app import main

main()
