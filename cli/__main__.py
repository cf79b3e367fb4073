"""``python -m streamlearn.cli``: the ``streamlearn`` command, also from a checkout."""

from __future__ import annotations

from streamlearn.cli.app import main

main()
