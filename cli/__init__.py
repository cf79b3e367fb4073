"""The ``streamlearn`` command line: the one layer that imports every other.

:mod:`cli.app` is the Typer app (the ``streamlearn`` console script, or
``python -m streamlearn.cli``); each command group has its module: :mod:`cli.worker` (``config``,
``run``, ``produce``), :mod:`cli.offline` (``generate``, ``replay``, ``backtest``,
``rank-eval``, ``dataset``), :mod:`cli.serve`, :mod:`cli.model`, :mod:`cli.stack`
(``stack ...`` and ``demo``), :mod:`cli.alerts` and :mod:`cli.metrics`; what they share
is :mod:`cli.common`.
"""
