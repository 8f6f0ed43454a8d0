"""Execution results as quantum writes them (`crates/model/src/result.rs`,
`ExecutionResult::to_json`), read with every price and quantity as an exact Decimal."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Dict, Mapping, Optional, Union

from .errors import MalformedResult


class ResultStatus(str, enum.Enum):
    """Every status quantum publishes (`ResultStatus::ALL`)."""

    FILLED = "filled"
    #: Final with part of the quantity filled and the rest cancelled or expired.
    PARTIALLY_FILLED = "partially_filled"
    REJECTED = "rejected"
    CANCELED = "canceled"
    EXPIRED = "expired"
    #: No fill was confirmed by the deadline and the order was cancelled (nothing filled).
    TIMEOUT = "timeout"
    #: quantum could not establish the outcome (the order may exist; see `error`).
    FAILED = "failed"

    @property
    def has_fill(self) -> bool:
        return self in (ResultStatus.FILLED, ResultStatus.PARTIALLY_FILLED)


_DECIMALS = (
    "entry_price",
    "executed_qty",
    "position_size_usd",
    "commission",
    "take_profit_pct",
    "stop_loss_pct",
    "trailing_pct",
    "take_profit_price",
    "stop_loss_price",
)


@dataclass(frozen=True)
class ExecutionResult:
    """One execution result. Decimal fields are exact; `raw` is the whole document as read
    (floats as Decimal), including any field this version does not know.

    `intent_id`, `symbol` and `action` are "" only in a `rejected` result for a document that was
    not a valid intent, where that value could not be read."""

    intent_id: str
    symbol: str
    action: str
    status: ResultStatus
    order_id: Optional[int]
    client_order_id: Optional[str]
    #: Average fill price; 0 without a fill.
    entry_price: Decimal
    executed_qty: Decimal
    #: The notional, entry_price × executed_qty.
    position_size_usd: Decimal
    leverage: Optional[int]
    #: The fees as the exchange stated them; None when quantum could not read them (never a 0
    #: the exchange did not charge).
    commission: Optional[Decimal]
    commission_asset: str
    reduce_only: bool
    take_profit_pct: Optional[Decimal]
    stop_loss_pct: Optional[Decimal]
    trailing_pct: Optional[Decimal]
    take_profit_price: Optional[Decimal]
    stop_loss_price: Optional[Decimal]
    #: "result_reply", "user_stream" or "rest_poll"; None without a fill.
    confirmed_by: Optional[str]
    error_code: Optional[int]
    error: Optional[str]
    #: Times in ms since the epoch: the intent's created_at, when the order was sent, the
    #: exchange's time of the last fill, and when the result was published.
    intent_at: Optional[int]
    order_sent_at: Optional[int]
    filled_at: Optional[int]
    published_at: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def has_fill(self) -> bool:
        return self.status.has_fill


def loads(text: Union[str, bytes]) -> Any:
    """JSON with every non-integer number as an exact Decimal."""
    return json.loads(text, parse_float=Decimal)


def _decimal(doc: Mapping[str, Any], name: str) -> Optional[Decimal]:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise MalformedResult(f"field {name}: expected a number, got {value!r}", doc)
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, str)):
        try:
            d = Decimal(value)
        except InvalidOperation:
            raise MalformedResult(f"field {name}: {value!r} is not a number", doc) from None
        if d.is_finite():
            return d
    raise MalformedResult(f"field {name}: expected a number, got {value!r}", doc)


def _int(doc: Mapping[str, Any], name: str) -> Optional[int]:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedResult(f"field {name}: expected an integer, got {value!r}", doc)
    return value


def _text(doc: Mapping[str, Any], name: str, default: Optional[str] = None) -> Optional[str]:
    value = doc.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise MalformedResult(f"field {name}: expected a string, got {value!r}", doc)
    return value


def parse_result(doc: Union[str, bytes, Mapping[str, Any]]) -> ExecutionResult:
    """Reads one result document (text, or a dict already read with `loads`). Raises
    MalformedResult for what quantum's own reader refuses: not an object, an unknown or missing
    status, a fill without a positive price and quantity, a missing intent_id/symbol/action
    outside a `rejected` result."""
    if isinstance(doc, (str, bytes)):
        try:
            doc = loads(doc)
        except ValueError as e:
            raise MalformedResult(f"not JSON: {e}", doc) from None
    if not isinstance(doc, Mapping):
        raise MalformedResult("the document is not a JSON object", doc)
    raw: Dict[str, Any] = dict(doc)
    status_text = raw.get("status")
    try:
        status = ResultStatus(status_text)
    except ValueError:
        raise MalformedResult(f"unknown status {status_text!r}", raw) from None

    identity = {}
    for name in ("intent_id", "symbol", "action"):
        value = raw.get(name)
        if not isinstance(value, str) or not value:
            if status is not ResultStatus.REJECTED:
                raise MalformedResult(f"missing or empty field {name}", raw)
            value = ""
        identity[name] = value

    entry_price = _decimal(raw, "entry_price")
    executed_qty = _decimal(raw, "executed_qty")
    if status.has_fill and (
        entry_price is None or executed_qty is None or entry_price <= 0 or executed_qty <= 0
    ):
        raise MalformedResult(
            f"a {status.value} result with entry_price {entry_price} and executed_qty "
            f"{executed_qty}: a fill needs both above zero",
            raw,
        )
    entry_price = entry_price if entry_price is not None else Decimal(0)
    executed_qty = executed_qty if executed_qty is not None else Decimal(0)
    notional = _decimal(raw, "position_size_usd")
    if notional is None:
        notional = entry_price * executed_qty

    reduce_only = raw.get("reduce_only", False)
    if not isinstance(reduce_only, bool):
        raise MalformedResult(f"field reduce_only: expected true or false, got {reduce_only!r}", raw)

    return ExecutionResult(
        intent_id=identity["intent_id"],
        symbol=identity["symbol"],
        action=identity["action"],
        status=status,
        order_id=_int(raw, "order_id"),
        client_order_id=_text(raw, "client_order_id"),
        entry_price=entry_price,
        executed_qty=executed_qty,
        position_size_usd=notional,
        leverage=_int(raw, "leverage"),
        commission=_decimal(raw, "commission"),
        commission_asset=_text(raw, "commission_asset", "USDT") or "USDT",
        reduce_only=reduce_only,
        take_profit_pct=_decimal(raw, "take_profit_pct"),
        stop_loss_pct=_decimal(raw, "stop_loss_pct"),
        trailing_pct=_decimal(raw, "trailing_pct"),
        take_profit_price=_decimal(raw, "take_profit_price"),
        stop_loss_price=_decimal(raw, "stop_loss_price"),
        confirmed_by=_text(raw, "confirmed_by"),
        error_code=_int(raw, "error_code"),
        error=_text(raw, "error"),
        intent_at=_int(raw, "intent_at"),
        order_sent_at=_int(raw, "order_sent_at"),
        filled_at=_int(raw, "filled_at"),
        published_at=_int(raw, "published_at") or 0,
        raw=raw,
    )
