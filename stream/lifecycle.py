"""The served model's lifecycle in a worker: load, restore, hot-swap, announce.

A worker serves one model slot. :class:`ModelLifecycle` puts a model in it:
a fresh one from the configuration, the version of the checkpoint the worker
resumes from, or a newer version promoted (or rolled back) in the registry,
which it swaps in while running (:meth:`ModelLifecycle.watch`). Each change is
announced in the worker's ``model_info`` series and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from river.base import Classifier

from streamlearn.learners.checkpoint import Checkpoint, CheckpointStore
from streamlearn.learners.checkpointer import Checkpointer, Retry, direct
from streamlearn.learners.registry import ModelRegistry
from streamlearn.metrics.instruments import WorkerMetrics
from streamlearn.stream.config import Settings
from streamlearn.stream.processor import ModelSlot

__all__ = ["ModelLifecycle", "ModelServices", "model_services"]

log = logging.getLogger(__name__)

#: Builds a worker's model registry and checkpointer (either None: there is none).
ModelServices = Callable[[], tuple[ModelRegistry | None, Checkpointer | None]]


class ModelLifecycle:
    """Which model version the worker's slot serves, and when it changes.

    Parameters
    ----------
    slot
        The served slot: its model, version and counters change here.
    models
        The registry; None (no signing key) serves a fresh model, never swapped.
    build
        Builds a fresh model from the configuration.
    metrics
        The worker's series (``model_info``).
    poll_seconds
        The least time between two looks at the registry for a promoted version.
    redis
        Runs each Redis call (the worker's retry policy).
    """

    def __init__(
        self,
        slot: ModelSlot,
        models: ModelRegistry | None,
        build: Callable[[], Classifier],
        metrics: WorkerMetrics,
        poll_seconds: float,
        redis: Retry = direct,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slot = slot
        self.models = models
        self.build = build
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self.redis = redis
        self.clock = clock
        #: The registry's generation (promotions and rollbacks) the slot reflects.
        self.generation = 0
        self._last_poll = 0.0

    def announce(self) -> None:
        """Publish the served model's name and version."""
        self.metrics.model_info.info({"name": self.slot.name, "version": self.slot.version})

    def use(self, version: str, reason: str) -> None:
        """Load ``version`` from the registry into the slot."""
        models = self.models
        assert models is not None
        model, info = self.redis(lambda: models.load(version))
        self.slot.model = model
        self.slot.version = info.version
        self.slot.labels_learned = info.labels_learned
        self.slot.events_scored = info.events_scored
        self.announce()
        log.info("serving model v%s (%s)", info.version, reason)

    def restore(self, checkpoint: Checkpoint | None) -> None:
        """Serve the model to resume from: a newer promoted version, ``checkpoint``'s, or a
        fresh one."""
        if self.models is None:
            return
        current, generation = self.redis(self.models.current_state)
        if current is not None and generation > (checkpoint.generation if checkpoint else 0):
            self.use(current, f"promoted, generation {generation}")
        elif checkpoint is not None:
            self.use(checkpoint.version, "checkpoint")
        else:
            self.slot.model = self.build()
            self.slot.version, self.slot.labels_learned, self.slot.events_scored = "0", 0, 0
            self.announce()
        self.generation = generation

    def watch(self) -> None:
        """Swap in a model promoted or rolled back since the last look (at most every
        ``poll_seconds``)."""
        if self.models is None:
            return
        now = self.clock()
        if now - self._last_poll < self.poll_seconds:
            return
        self._last_poll = now
        current, generation = self.redis(self.models.current_state)
        if generation != self.generation and current is not None:
            self.generation = generation
            self.use(current, f"promoted, generation {generation}")
            if self.slot.monitor is not None:
                self.slot.monitor.reset_reference()

    def checkpointed(self, version: str) -> None:
        """The slot's model was saved as ``version`` (a checkpoint): it is its version now."""
        self.slot.version = version
        self.announce()


def model_services(
    client: redis.Redis,
    settings: Settings,
    name: str,
    signing_key: bytes | None,
    redis_waits: Retry = direct,
) -> tuple[ModelRegistry | None, Checkpointer | None]:
    """The registry and the checkpointer of worker ``name``.

    Without a signing key there is neither (snapshots are signed); without
    ``checkpoint.enabled`` there is no checkpointer.
    """
    if not signing_key:
        return None, None
    namespace, group = settings.store.key_prefix, settings.kafka.group_id
    models = ModelRegistry(client, namespace, signing_key)
    if not settings.checkpoint.enabled:
        return models, None
    record = CheckpointStore(client, namespace, group, name)
    note = f"checkpoint of {name} in {group}"
    keep = settings.checkpoint.keep_versions
    return models, Checkpointer(models, record, note, keep, redis_waits)
