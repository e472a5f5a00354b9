"""Task options: what a ``@task`` decorator or a ``%%task`` cell asks of the engine."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from nbflow.exceptions import ValidationError

if TYPE_CHECKING:
    from nbflow.engine.context import TaskRunContext

__all__ = ["CacheKeyFn", "TaskOptions"]

CacheKeyFn = Callable[["TaskRunContext", dict[str, Any]], "str | None"]


@dataclass(frozen=True)
class TaskOptions:
    """How to run one task: retries, timeout, caching, result persistence, logging."""

    name: str = "task"
    retries: int = 0
    #: One delay for every retry, or one per retry (the last repeats).
    retry_delay_seconds: float | Sequence[float] = 0
    #: Adds up to ``factor * delay`` random seconds to each delay (spreads retries out).
    retry_jitter_factor: float | None = None
    timeout_seconds: float | None = None
    cache_policy: Literal["inputs"] | None = None
    cache_key_fn: CacheKeyFn | None = None
    cache_expiration: timedelta | None = None
    #: None: persist when a cache key is in use.
    persist_result: bool | None = None
    #: Directory path or fsspec URL; None: ``settings.results_url``.
    result_storage: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    log_prints: bool = False

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValidationError("retries", self.retries, "must be 0 or more")
        delays = self.retry_delay_seconds
        values = list(delays) if isinstance(delays, Sequence) else [delays]
        if any(d < 0 for d in values):
            raise ValidationError("retry_delay_seconds", delays, "delays must be >= 0")
        if self.retry_jitter_factor is not None and self.retry_jitter_factor < 0:
            raise ValidationError("retry_jitter_factor", self.retry_jitter_factor, "must be >= 0")
        if self.timeout_seconds is not None and self.timeout_seconds <= 0:
            raise ValidationError("timeout_seconds", self.timeout_seconds, "must be > 0")
        if self.cache_policy not in (None, "inputs"):
            raise ValidationError(
                "cache_policy", self.cache_policy, "unknown policy", 'use "inputs" or None'
            )

    @property
    def uses_cache(self) -> bool:
        """Whether a cache key is computed for each run."""
        return self.cache_policy is not None or self.cache_key_fn is not None

    def retry_delay(self, retry_number: int) -> float:
        """Return the delay before retry ``retry_number`` (1-based), jitter included."""
        delays = self.retry_delay_seconds
        if isinstance(delays, Sequence):
            if not delays:
                return 0.0
            delay = float(delays[min(retry_number, len(delays)) - 1])
        else:
            delay = float(delays)
        if self.retry_jitter_factor:
            delay += random.uniform(0, delay * self.retry_jitter_factor)
        return delay
