"""The local stack: Kafka, Redis, Prometheus, Alertmanager and the alert receiver run as
local processes for the demo, the tests and the benchmarks (no Docker), and the demo
that streams a synthetic world through it.

Operations tooling, above the streaming runtime (:mod:`stream`) and below the command
line (:mod:`cli`): :mod:`stack.supervisor` starts and stops the processes,
:mod:`stack.config` says where they live and listen, :mod:`stack.services` probes them,
:mod:`stack.files` renders their config files, :mod:`stack.install` resolves Kafka's
jars, :mod:`stack.alert_receiver` keeps the alerts Alertmanager sends, and
:mod:`stack.demo` is ``streamlearn demo``.

Examples
--------
>>> from streamlearn.stack import Stack, StackConfig
>>> Stack(StackConfig(root="/tmp/streamlearn-doc-stack")).config.redis_url
'redis://127.0.0.1:6390/0'
"""

from __future__ import annotations

from streamlearn.stack.config import (
    ALL_SERVICES,
    CORE_SERVICES,
    ServiceStatus,
    StackConfig,
    default_root,
    fast_stack_config,
    free_ports,
    private_stack_config,
)
from streamlearn.stack.install import StackError
from streamlearn.stack.supervisor import Stack

__all__ = [
    "ALL_SERVICES",
    "CORE_SERVICES",
    "ServiceStatus",
    "Stack",
    "StackConfig",
    "StackError",
    "default_root",
    "fast_stack_config",
    "free_ports",
    "private_stack_config",
]
