"""``python -m streamlearn.cli``: the ``streamlearn`` command, from a checkout without installing it."""

from __future__ import annotations

from streamlearn.cli.app import main

main()
