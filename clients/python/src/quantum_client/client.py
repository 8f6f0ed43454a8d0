"""The synchronous client."""

from __future__ import annotations

import time
from typing import Any, Dict, Optional

import redis

from . import _common
from .errors import ResultTimeout
from .intent import DecimalLike, Millis, build_intent, encode_intent
from .result import ExecutionResult


class QuantumClient:
    """Publishes trade intents on quantum's intent stream and waits for their execution results.

    >>> client = QuantumClient("redis://127.0.0.1:6379")
    >>> intent_id = client.publish_intent("AXSUSDT", "BUY", position_size_usd=Decimal("100"),
    ...                                   stop_loss_pct=Decimal("1"))
    >>> result = client.wait_result(intent_id, timeout=60)   # raises unless filled
    >>> result.entry_price, result.executed_qty

    `redis_client` may be an existing `redis.Redis` instead of a URL (the client then does not
    close it). `source` is the intents' `source` unless `publish_intent` is given one.
    """

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379",
        *,
        redis_client: Optional["redis.Redis"] = None,
        intent_stream: str = _common.INTENT_STREAM,
        result_stream: str = _common.RESULT_STREAM,
        max_len: Optional[int] = _common.DEFAULT_MAX_LEN,
        source: Optional[str] = "quantum-py",
    ) -> None:
        self._owns = redis_client is None
        self._redis: "redis.Redis" = (
            redis_client if redis_client is not None else redis.Redis.from_url(redis_url)
        )
        self.intent_stream = intent_stream
        self.result_stream = result_stream
        self.max_len = max_len
        self.default_source = source
        # intent id -> the result stream's last id just before the intent was published: its
        # result can only come after that, so waiting reads from there and misses nothing.
        self._since: Dict[str, str] = {}

    def close(self) -> None:
        if self._owns:
            self._redis.close()

    def __enter__(self) -> "QuantumClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish_intent(
        self,
        symbol: str,
        action: str,
        *,
        position_size_usd: Optional[DecimalLike] = None,
        quantity: Optional[DecimalLike] = None,
        leverage: Optional[int] = None,
        take_profit_pct: Optional[DecimalLike] = None,
        stop_loss_pct: Optional[DecimalLike] = None,
        trailing_pct: Optional[DecimalLike] = None,
        take_profit_price: Optional[DecimalLike] = None,
        stop_loss_price: Optional[DecimalLike] = None,
        source: Optional[str] = None,
        expires_at: Optional[Millis] = None,
        intent_id: Optional[str] = None,
        position_side: Optional[str] = None,
    ) -> str:
        """Checks and publishes one intent; returns its intent id (generated when not given).
        Raises IntentError, naming the field, for an intent quantum would refuse."""
        doc = build_intent(
            symbol,
            action,
            position_size_usd=position_size_usd,
            quantity=quantity,
            leverage=leverage,
            take_profit_pct=take_profit_pct,
            stop_loss_pct=stop_loss_pct,
            trailing_pct=trailing_pct,
            take_profit_price=take_profit_price,
            stop_loss_price=stop_loss_price,
            source=source if source is not None else self.default_source,
            expires_at=expires_at,
            intent_id=intent_id,
            position_side=position_side,
        )
        self.publish_document(doc["intent_id"], encode_intent(doc))
        return str(doc["intent_id"])

    def publish_document(self, intent_id: str, text: str) -> str:
        """Publishes an intent document as given (no checks) and remembers where to look for the
        result of `intent_id`. Returns the stream entry's id. For tests and tools; strategies use
        `publish_intent`."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.xrevrange(self.result_stream, "+", "-", count=1)
        pipe.xadd(
            self.intent_stream,
            {_common.PAYLOAD_FIELD: text},
            maxlen=self.max_len,
            approximate=True,
        )
        newest, entry_id = pipe.execute()
        self._since[intent_id] = _common.last_id(newest)
        _common.forget_oldest(self._since)
        return _common._text(entry_id)

    def wait_result(self, intent_id: str, timeout: float = 60.0) -> ExecutionResult:
        """Waits for the result of `intent_id` and returns it when it carries a fill (`filled`,
        `partially_filled`: check `result.status`). Raises IntentRejected, IntentExpired,
        OrderCanceled, FillTimeout or ExecutionFailed (all ExecutionError, with `.status`,
        `.reason`, `.result`) for the other statuses, MalformedResult for a result that cannot
        be read, and ResultTimeout (a TimeoutError) when none arrives within `timeout` seconds.

        For an intent this client published, only results after its publication are read; for
        any other id the whole retained result stream is scanned first."""
        deadline = time.monotonic() + timeout
        cursor = self._since.get(intent_id, _common.STREAM_START)
        while True:
            remaining = deadline - time.monotonic()
            block_ms = max(1, min(int(remaining * 1000), 1000))
            reply = self._redis.xread(
                {self.result_stream: cursor}, count=_common.READ_BATCH, block=block_ms
            )
            entries = _common.entries_of(reply)
            for result in _common.find(entries, intent_id):
                self._since.pop(intent_id, None)
                return _common.outcome(result)
            if entries:
                cursor = entries[-1][0]
            # Past the deadline, what is already on the stream is still read to its end (a batch
            # that is not full means the end was reached), then it is a timeout.
            if remaining <= 0 and len(entries) < _common.READ_BATCH:
                raise ResultTimeout(intent_id, timeout)

    def execute(self, symbol: str, action: str, *, timeout: float = 60.0, **fields: Any) -> ExecutionResult:
        """`publish_intent` then `wait_result`."""
        return self.wait_result(self.publish_intent(symbol, action, **fields), timeout=timeout)
