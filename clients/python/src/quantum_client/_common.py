"""What the sync and the asyncio client share: stream names, reading XREAD replies, and turning a
result into a return value or an exception."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

from .errors import (
    ExecutionFailed,
    FillTimeout,
    IntentExpired,
    IntentRejected,
    MalformedResult,
    OrderCanceled,
)
from .result import ExecutionResult, ResultStatus, loads, parse_result

#: quantum's stream names (`crates/bus/src/keys.rs`); each entry holds its JSON in `payload`.
INTENT_STREAM = "quantum:stream:trade.intent"
RESULT_STREAM = "quantum:stream:trade.execution.res"
PAYLOAD_FIELD = "payload"
#: quantum's default `redis.max_len`: streams are trimmed to about this many entries.
DEFAULT_MAX_LEN = 100_000
#: The id before every entry: where a scan of the whole (trimmed) result stream starts.
STREAM_START = "0-0"
#: How many entries one XREAD returns at most.
READ_BATCH = 500
#: How many published-but-not-awaited intents a client remembers the start of; beyond it the
#: oldest are forgotten (waiting for one of those then scans the stream from its start).
MAX_REMEMBERED = 10_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def last_id(entries: Any) -> str:
    """The id of the newest entry in an XREVRANGE ... COUNT 1 reply, or the stream's start."""
    if entries:
        return _text(entries[0][0])
    return STREAM_START


def forget_oldest(since: Dict[str, str]) -> None:
    """Keeps `since` (intent id -> stream id, in insertion order) at MAX_REMEMBERED entries."""
    while len(since) > MAX_REMEMBERED:
        del since[next(iter(since))]


def entries_of(reply: Any) -> List[Tuple[str, Any]]:
    """The (id, fields) pairs of an XREAD reply, in order (RESP2 lists or RESP3 dicts)."""
    out: List[Tuple[str, Any]] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                collect(value)
        elif isinstance(node, (list, tuple)):
            if (
                len(node) == 2
                and isinstance(node[0], (str, bytes))
                and (node[1] is None or isinstance(node[1], dict))
            ):
                out.append((_text(node[0]), node[1]))
                return
            for value in node:
                collect(value)

    collect(reply)
    return out


def payload_of(fields: Any) -> Optional[str]:
    if not isinstance(fields, dict):
        return None
    for key, value in fields.items():
        if _text(key) == PAYLOAD_FIELD:
            return _text(value)
    return None


def find(entries: List[Tuple[str, Any]], intent_id: str) -> Iterator[ExecutionResult]:
    """The results for `intent_id` among the entries, in stream order. A matching document that
    cannot be read raises MalformedResult; other intents' entries are skipped unread."""
    for _entry_id, fields in entries:
        payload = payload_of(fields)
        if payload is None:
            continue
        try:
            doc = loads(payload)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("intent_id") == intent_id:
            yield parse_result(doc)


def outcome(result: ExecutionResult) -> ExecutionResult:
    """The result when it carries a fill; otherwise the exception of its status."""
    status = result.status
    if status is ResultStatus.FILLED or status is ResultStatus.PARTIALLY_FILLED:
        return result
    if status is ResultStatus.REJECTED:
        raise IntentRejected(result)
    if status is ResultStatus.EXPIRED:
        raise IntentExpired(result)
    if status is ResultStatus.CANCELED:
        raise OrderCanceled(result)
    if status is ResultStatus.TIMEOUT:
        raise FillTimeout(result)
    if status is ResultStatus.FAILED:
        raise ExecutionFailed(result)
    # Unreachable while ResultStatus and this function agree; never a silent success.
    raise MalformedResult(f"unhandled status {status!r}", result.raw)
