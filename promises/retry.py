"""Retry policies for steps: exponential (the default), linear, constant, never.

``delay(attempt, error)`` says how long to wait before the next attempt after the
``attempt``-th failure (1 = the first), or ``None`` to stop and fail the step. Errors
that subclass ``NonRetryableError``, or whose type is in ``non_retryable``, fail at
once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


class NonRetryableError(Exception):
    """Raise (a subclass of) this from a step to fail it without retrying."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")

    def retryable(self, error: BaseException) -> bool:
        return not isinstance(error, (NonRetryableError, *self.non_retryable))

    def delay(self, attempt: int, error: BaseException) -> float | None:
        if attempt >= self.max_attempts or not self.retryable(error):
            return None
        return self.backoff(attempt)

    def backoff(self, attempt: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class Exponential(RetryPolicy):
    """``initial * factor**(attempt-1)``, capped at ``max_delay``, with +/- ``jitter``."""

    initial: float = 1.0
    factor: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.1
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def backoff(self, attempt: int) -> float:
        base = min(self.initial * self.factor ** (attempt - 1), self.max_delay)
        return max(0.0, base * (1 + self.jitter * (2 * self.rng.random() - 1)))


@dataclass(frozen=True)
class Linear(RetryPolicy):
    """``initial + increment * (attempt-1)``, capped at ``max_delay``."""

    initial: float = 1.0
    increment: float = 1.0
    max_delay: float = 60.0

    def backoff(self, attempt: int) -> float:
        return min(self.initial + self.increment * (attempt - 1), self.max_delay)


@dataclass(frozen=True)
class Constant(RetryPolicy):
    every: float = 1.0

    def backoff(self, attempt: int) -> float:
        return self.every


@dataclass(frozen=True)
class Never(RetryPolicy):
    """One attempt; any failure fails the step."""

    max_attempts: int = 1

    def backoff(self, attempt: int) -> float:
        return 0.0
