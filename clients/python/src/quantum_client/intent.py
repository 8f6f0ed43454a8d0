"""Trade intents: the cheap checks the execution service would also make, and the JSON document
with every decimal written with its exact digits (never through a float).

The contract is quantum's `crates/model/src/intent.rs` (`TradeIntent::from_json`): decimals are
JSON numbers with exact digits or strings, at most 28 digits after the point; unknown fields are
refused; `intent_id` is 1 to 128 printable characters; `symbol` 2 to 20 letters or digits."""

from __future__ import annotations

import json
import time
import unicodedata
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Dict, Optional, Union

from .errors import IntentError

#: What a decimal field accepts. A float is refused: its binary value is not the digits written.
DecimalLike = Union[Decimal, int, str]
#: `expires_at`: milliseconds since the epoch, or an aware datetime.
Millis = Union[int, datetime]

ACTIONS = ("BUY", "SELL", "CLOSE")
POSITION_SIDES = ("LONG", "SHORT")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# rust_decimal: a 96-bit mantissa and a scale of at most 28.
_MAX_SCALE = 28
_MAX_MANTISSA = 2**96 - 1


def new_intent_id() -> str:
    """A fresh intent id, short enough that the order's client order id stays readable
    (`q-py-<20 hex digits>`)."""
    return "py-" + uuid.uuid4().hex[:20]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_decimal(field: str, value: Any) -> Decimal:
    """`value` as an exact Decimal, or IntentError naming `field`."""
    if isinstance(value, bool) or isinstance(value, float):
        raise IntentError(
            f"expected a Decimal, int or str, got {type(value).__name__} {value!r} "
            "(a float does not hold the digits it prints; use Decimal('...'))",
            field,
        )
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation:
            raise IntentError(f"{value!r} is not a decimal number", field) from None
    else:
        raise IntentError(f"expected a Decimal, int or str, got {type(value).__name__}", field)
    if not d.is_finite():
        raise IntentError(f"{value!r} is not a finite number", field)
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    if -exponent > _MAX_SCALE:
        raise IntentError(
            f"{value!r} has more digits than quantum's decimals hold (28 after the point at most)",
            field,
        )
    mantissa = int("".join(map(str, digits)) or "0") * (10 ** max(exponent, 0))
    if mantissa > _MAX_MANTISSA:
        raise IntentError(f"{value!r} is too large", field)
    return d


def decimal_text(value: Decimal) -> str:
    """A Decimal as a JSON number with exactly its digits: positional notation (`1E-7` becomes
    `0.0000001`, `1E+2` becomes `100`), trailing zeros kept."""
    text = format(value, "f")
    if text.startswith("-0") and value == 0:
        text = text[1:]
    return text


def _positive(field: str, value: Optional[DecimalLike]) -> Optional[Decimal]:
    if value is None:
        return None
    d = to_decimal(field, value)
    if d <= 0:
        raise IntentError(f"must be greater than zero, got {value}", field)
    return d


def _millis(field: str, value: Optional[Millis]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise IntentError("a datetime must be timezone-aware", field)
        return (value - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, bool) or not isinstance(value, int):
        raise IntentError(
            f"expected milliseconds since the epoch (int) or a datetime, got {value!r}", field
        )
    return value


def build_intent(
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
    created_at: Optional[int] = None,
) -> Dict[str, Any]:
    """The intent document as a dict of str, int and Decimal values (None fields left out),
    after the checks the execution service also makes. Raises IntentError with the reason."""
    if intent_id is None:
        intent_id = new_intent_id()
    if not isinstance(intent_id, str) or not 1 <= len(intent_id) <= 128:
        raise IntentError(f"{intent_id!r} must be 1 to 128 printable characters", "intent_id")
    if any(unicodedata.category(c) == "Cc" for c in intent_id):
        raise IntentError(f"{intent_id!r} must be 1 to 128 printable characters", "intent_id")

    if not isinstance(symbol, str):
        raise IntentError(f"expected a string, got {symbol!r}", "symbol")
    sym = symbol.strip().upper()
    if not (2 <= len(sym) <= 20 and sym.isascii() and sym.isalnum()):
        raise IntentError(f"{symbol!r} must be 2 to 20 letters or digits, e.g. BTCUSDT", "symbol")

    act = action.strip().upper() if isinstance(action, str) else None
    if act not in ACTIONS:
        raise IntentError(f"{action!r} is not BUY, SELL or CLOSE", "action")

    usd = _positive("position_size_usd", position_size_usd)
    qty = _positive("quantity", quantity)
    if act == "CLOSE":
        if usd is not None:
            raise IntentError(
                "a CLOSE takes quantity (or nothing for the whole position)", "position_size_usd"
            )
    elif usd is None and qty is None:
        raise IntentError(f"a {act} needs position_size_usd or quantity", "position_size_usd")
    elif usd is not None and qty is not None:
        raise IntentError("give position_size_usd or quantity, not both", "quantity")

    if leverage is not None and (
        isinstance(leverage, bool) or not isinstance(leverage, int) or not 1 <= leverage <= 125
    ):
        raise IntentError(f"must be a whole number from 1 to 125, got {leverage!r}", "leverage")

    trail = None
    if trailing_pct is not None:
        trail = to_decimal("trailing_pct", trailing_pct)
        if not Decimal("0.1") <= trail <= Decimal(10):
            raise IntentError(
                f"Binance allows a callback of 0.1 to 10 percent, got {trailing_pct}",
                "trailing_pct",
            )

    levels: Dict[str, Optional[Decimal]] = {}
    for pct_field, pct_value, price_field, price_value in (
        ("take_profit_pct", take_profit_pct, "take_profit_price", take_profit_price),
        ("stop_loss_pct", stop_loss_pct, "stop_loss_price", stop_loss_price),
    ):
        pct = _positive(pct_field, pct_value)
        price = _positive(price_field, price_value)
        if pct is not None and price is not None:
            raise IntentError(f"give {pct_field} or {price_field}, not both", pct_field)
        if pct is not None and pct >= 100:
            raise IntentError("must be below 100", pct_field)
        levels[pct_field] = pct
        levels[price_field] = price

    if act == "CLOSE" and (trail is not None or any(v is not None for v in levels.values())):
        raise IntentError("a CLOSE takes no exit plan", "action")

    if source is not None and not isinstance(source, str):
        raise IntentError(f"expected a string, got {source!r}", "source")

    side = None
    if position_side is not None:
        side = position_side.strip().upper() if isinstance(position_side, str) else None
        if side not in POSITION_SIDES:
            raise IntentError(f"{position_side!r} is not LONG or SHORT", "position_side")

    doc: Dict[str, Any] = {
        "intent_id": intent_id,
        "symbol": sym,
        "action": act,
        "position_size_usd": usd,
        "quantity": qty,
        "leverage": leverage,
        "take_profit_pct": levels["take_profit_pct"],
        "stop_loss_pct": levels["stop_loss_pct"],
        "trailing_pct": trail,
        "take_profit_price": levels["take_profit_price"],
        "stop_loss_price": levels["stop_loss_price"],
        "source": source,
        "created_at": _millis("created_at", created_at if created_at is not None else now_ms()),
        "expires_at": _millis("expires_at", expires_at),
        # Only sent when given: a quantum without hedge mode refuses the field as unknown.
        "position_side": side,
    }
    return {k: v for k, v in doc.items() if v is not None}


def encode_intent(doc: Dict[str, Any]) -> str:
    """The JSON text of an intent document: Decimals as JSON numbers with their exact digits."""
    parts = []
    for key, value in doc.items():
        if isinstance(value, Decimal):
            text = decimal_text(value)
        elif isinstance(value, bool) or isinstance(value, float):
            raise TypeError(f"{key}: {type(value).__name__} is not allowed in an intent")
        elif isinstance(value, (int, str)) or value is None:
            text = json.dumps(value)
        else:
            raise TypeError(f"{key}: cannot encode {type(value).__name__}")
        parts.append(f"{json.dumps(key)}:{text}")
    return "{" + ",".join(parts) + "}"
