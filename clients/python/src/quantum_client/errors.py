"""The exceptions of quantum_client. Everything it raises on purpose derives from QuantumError."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:  # pragma: no cover
    from .result import ExecutionResult


class QuantumError(Exception):
    """Base of every error quantum_client raises on purpose."""


class IntentError(QuantumError, ValueError):
    """An intent the execution service would refuse, caught before it is published.

    `field` names the field at fault (None when the fault is a combination of fields)."""

    def __init__(self, reason: str, field: Optional[str] = None) -> None:
        super().__init__(f"field {field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


class MalformedResult(QuantumError):
    """A result document for the awaited intent that cannot be read (not JSON, missing or invalid
    field, unknown status). Never taken for a success; `raw` holds what was read."""

    def __init__(self, reason: str, raw: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class ResultTimeout(QuantumError, TimeoutError):
    """No result for the intent arrived within the timeout. The intent may still be executed:
    quantum answers every intent exactly once, so a later `wait_result` can still find it."""

    def __init__(self, intent_id: str, timeout: float) -> None:
        super().__init__(
            f"no execution result for intent {intent_id!r} within {timeout:g} s; "
            "is `quantum execution` running?"
        )
        self.intent_id = intent_id
        self.timeout = timeout


class ExecutionError(QuantumError):
    """The intent's result says it was not (or not knowably) executed. `result` is the full
    result, `status` its status, `reason` its `error` text and `error_code` the exchange's code."""

    def __init__(self, result: "ExecutionResult") -> None:
        self.result = result
        self.status = result.status.value
        self.reason = result.error
        self.error_code = result.error_code
        code = f" (code {result.error_code})" if result.error_code is not None else ""
        super().__init__(
            f"intent {result.intent_id!r} {self.status}{code}: {result.error or 'no reason given'}"
        )

    @property
    def raw(self) -> Mapping[str, Any]:
        return self.result.raw


class IntentRejected(ExecutionError):
    """`rejected`: refused by quantum (invalid intent, risk gate, trading halted) or by the
    exchange; nothing was executed."""


class IntentExpired(ExecutionError):
    """`expired`: too old (`execution.max_age`) or past its `expires_at` before it could be sent;
    nothing was sent."""


class OrderCanceled(ExecutionError):
    """`canceled`: the order was cancelled with nothing filled."""


class FillTimeout(ExecutionError):
    """`timeout`: no fill was confirmed by quantum's fill timeout, so the order was cancelled
    (nothing filled)."""


class ExecutionFailed(ExecutionError):
    """`failed`: quantum could not establish the outcome, or the exchange failed the order. The
    order MAY exist (see `reason`, e.g. "OUTCOME UNKNOWN"): check the exchange before retrying."""
