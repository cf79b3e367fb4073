"""The sections of what a worker runs: ``model``, ``checkpoint``, ``metrics`` (its
``/metrics`` endpoint) and ``serve`` (the HTTP API).

The ``features``, ``store``, ``limits`` and ``monitoring`` sections are defined beside
the code they configure (:mod:`features` and :mod:`metrics`).

Examples
--------
>>> ModelConfig().spec, CheckpointConfig().every_labels, MetricsConfig().port
('logistic', 5000, 9108)
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from river.base import Classifier

from streamlearn.learners.models import DEFAULT_BUCKETS, DEFAULT_MAX_CATEGORIES, build_model
from streamlearn.stream.config.connections import FROZEN

__all__ = ["CheckpointConfig", "MetricsConfig", "ModelConfig", "ServeConfig"]


class ModelConfig(BaseModel):
    model_config = FROZEN

    spec: str = Field(
        default="logistic",
        min_length=1,
        description="A preset (logistic, hoeffding_tree, arf) or package.module:function.",
    )
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="Decision threshold.")
    max_categories: int = Field(
        default=DEFAULT_MAX_CATEGORIES,
        ge=0,
        le=1_000_000,
        description=(
            "Values of each string feature a preset model keeps apart; later values share "
            "category_buckets buckets (0: no bound)."
        ),
    )
    category_buckets: int = Field(
        default=DEFAULT_BUCKETS,
        ge=1,
        le=65_536,
        description="Buckets per string feature for the values beyond max_categories.",
    )

    def build(self, spec: str | None = None) -> Classifier:
        """A fresh model for ``spec`` (default: ``self.spec``) with this vocabulary bound.

        >>> ModelConfig(max_categories=8).build().__class__.__name__
        'Pipeline'
        """
        return build_model(spec or self.spec, self.max_categories, self.category_buckets)


class CheckpointConfig(BaseModel):
    model_config = FROZEN

    enabled: bool = Field(
        default=True,
        description="Snapshot the model with its offsets (needs STREAMLEARN_MODEL_KEY).",
    )
    every_labels: int = Field(
        default=5000, gt=0, le=100_000_000, description="Checkpoint after this many labels."
    )
    every_seconds: float = Field(
        default=30.0, gt=0, le=86_400, description="... or this many seconds."
    )
    keep_versions: int = Field(
        default=10,
        ge=1,
        le=10_000,
        description="Checkpoint snapshots of a worker kept in the registry.",
    )
    registry_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="How often to look for a promoted or rolled-back model.",
    )


class MetricsConfig(BaseModel):
    model_config = FROZEN

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=9108, ge=0, le=65535, description="0: no /metrics server.")


class ServeConfig(BaseModel):
    """The HTTP scoring and ranking API (``streamlearn serve``).

    >>> ServeConfig().max_candidates, ServeConfig().refresh_seconds
    (1000, 5.0)
    """

    model_config = FROZEN

    host: str = Field(default="127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port to listen on.")
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes.")
    max_candidates: int = Field(
        default=1000, ge=1, le=100_000, description="Most candidates in one /rank request."
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=67_108_864,
        description="Largest request body; a larger one is refused with 413.",
    )
    refresh_seconds: float = Field(
        default=5.0,
        ge=0.05,
        le=3600,
        description="How often to look for a promoted model or a newer worker checkpoint.",
    )
