"""streamlearn: real-time scoring and online learning.

Kafka in, interaction features in Redis, River models, Prometheus out. One
namespace, in layers (each imports only those below it):

* :mod:`features`: the event schema, the feature math, the interaction store;
* :mod:`learners` and :mod:`metrics`: models, the signed
  registry and checkpoints, experiments; drift, quality, the generated alert rules
  and dashboard;
* :mod:`stream`: the worker, serving, replay, backtest and its report;
* :mod:`stack`: the local stack (Kafka, Redis, Prometheus, Alertmanager
  as local processes) and the demo;
* :mod:`cli`: the ``streamlearn`` command line.

In the repository each package is a top-level folder; ``streamlearn/`` links them
under the one name that is installed.
"""

__version__ = "0.1.0"
