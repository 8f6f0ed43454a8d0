"""quantum_client: publish trade intents to quantum and wait for their confirmed execution
results, over quantum's Redis streams. Sync (`QuantumClient`) and asyncio (`AsyncQuantumClient`),
with every price and quantity an exact `decimal.Decimal`."""

from ._common import INTENT_STREAM, RESULT_STREAM
from .aio import AsyncQuantumClient
from .client import QuantumClient
from .errors import (
    ExecutionError,
    ExecutionFailed,
    FillTimeout,
    IntentError,
    IntentExpired,
    IntentRejected,
    MalformedResult,
    OrderCanceled,
    QuantumError,
    ResultTimeout,
)
from .intent import build_intent, encode_intent, new_intent_id
from .result import ExecutionResult, ResultStatus, parse_result

__all__ = [
    "AsyncQuantumClient",
    "ExecutionError",
    "ExecutionFailed",
    "ExecutionResult",
    "FillTimeout",
    "INTENT_STREAM",
    "IntentError",
    "IntentExpired",
    "IntentRejected",
    "MalformedResult",
    "OrderCanceled",
    "QuantumClient",
    "QuantumError",
    "RESULT_STREAM",
    "ResultStatus",
    "ResultTimeout",
    "build_intent",
    "encode_intent",
    "new_intent_id",
    "parse_result",
]

__version__ = "0.1.0"
