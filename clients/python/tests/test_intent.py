"""Unit tests: the client-side checks of an intent and the exactness of its JSON document."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import pytest

from quantum_client import IntentError, build_intent, encode_intent, new_intent_id


def refused(field: str, *args: Any, **kwargs: Any) -> IntentError:
    with pytest.raises(IntentError) as info:
        build_intent(*args, **kwargs)
    assert info.value.field == field, info.value
    return info.value


def test_a_buy_document_has_exactly_the_given_fields() -> None:
    doc = build_intent(
        "axsusdt",
        "buy",
        position_size_usd=Decimal("100"),
        leverage=10,
        take_profit_pct=Decimal("2.5"),
        stop_loss_pct="1",
        source="test",
        intent_id="t-1",
        expires_at=1_900_000_000_000,
    )
    created = doc.pop("created_at")
    assert isinstance(created, int) and created > 1_700_000_000_000
    assert doc == {
        "intent_id": "t-1",
        "symbol": "AXSUSDT",
        "action": "BUY",
        "position_size_usd": Decimal("100"),
        "leverage": 10,
        "take_profit_pct": Decimal("2.5"),
        "stop_loss_pct": Decimal("1"),
        "source": "test",
        "expires_at": 1_900_000_000_000,
    }


def test_decimals_are_written_as_json_numbers_with_their_exact_digits() -> None:
    doc = build_intent(
        "BTCUSDT",
        "SELL",
        quantity=Decimal("0.123456789012345678901234567"),
        take_profit_price=Decimal("1E+5"),
        stop_loss_price=Decimal("104999.90"),
        trailing_pct=Decimal("0.1"),
        intent_id="exact",
        created_at=1,
    )
    text = encode_intent(doc)
    assert text == (
        '{"intent_id":"exact","symbol":"BTCUSDT","action":"SELL",'
        '"quantity":0.123456789012345678901234567,"trailing_pct":0.1,'
        '"take_profit_price":100000,"stop_loss_price":104999.90,"created_at":1}'
    )
    # Read back exactly (a float would have lost the quantity's digits).
    back = json.loads(text, parse_float=Decimal)
    assert back["quantity"] == Decimal("0.123456789012345678901234567")
    assert float(back["quantity"]) != back["quantity"]
    assert back["stop_loss_price"] == Decimal("104999.90")


def test_small_decimals_are_not_written_in_scientific_notation() -> None:
    doc = build_intent("DOGEUSDT", "BUY", quantity=Decimal("1E-7"), intent_id="s", created_at=1)
    assert '"quantity":0.0000001' in encode_intent(doc)


def test_floats_are_refused_because_they_are_not_the_digits_they_print() -> None:
    e = refused("quantity", "BTCUSDT", "BUY", quantity=0.1)
    assert "float" in str(e)
    refused("stop_loss_pct", "BTCUSDT", "BUY", quantity=1, stop_loss_pct=1.5)


def test_decimals_quantum_cannot_hold_are_refused() -> None:
    refused("quantity", "BTCUSDT", "BUY", quantity=Decimal("1E-29"))
    refused("quantity", "BTCUSDT", "BUY", quantity=Decimal("1E+29"))
    refused("quantity", "BTCUSDT", "BUY", quantity=Decimal("NaN"))
    refused("quantity", "BTCUSDT", "BUY", quantity="1,5")
    build_intent("BTCUSDT", "BUY", quantity=Decimal("1E-28"))


def test_action_must_be_buy_sell_or_close() -> None:
    refused("action", "BTCUSDT", "HOLD", quantity=1)
    assert build_intent("BTCUSDT", " close ")["action"] == "CLOSE"


def test_buy_and_sell_take_exactly_one_size() -> None:
    e = refused("position_size_usd", "BTCUSDT", "BUY")
    assert "position_size_usd or quantity" in e.reason
    refused("quantity", "BTCUSDT", "SELL", quantity=1, position_size_usd=100)
    refused("quantity", "BTCUSDT", "BUY", quantity=0)
    refused("position_size_usd", "BTCUSDT", "BUY", position_size_usd="-5")


def test_close_takes_a_quantity_or_nothing_and_no_exit_plan() -> None:
    assert "quantity" not in build_intent("BTCUSDT", "CLOSE")
    assert build_intent("BTCUSDT", "CLOSE", quantity="0.5")["quantity"] == Decimal("0.5")
    refused("position_size_usd", "BTCUSDT", "CLOSE", position_size_usd=100)
    for plan in (
        {"stop_loss_pct": 1},
        {"take_profit_price": 5},
        {"trailing_pct": 1},
    ):
        e = refused("action", "BTCUSDT", "CLOSE", **plan)
        assert "no exit plan" in e.reason


def test_take_profit_and_stop_loss_are_a_percentage_or_a_price_not_both() -> None:
    e = refused("take_profit_pct", "X1", "BUY", quantity=1, take_profit_pct=1, take_profit_price=5)
    assert "not both" in e.reason
    refused("stop_loss_pct", "X1", "BUY", quantity=1, stop_loss_pct=1, stop_loss_price=5)
    refused("stop_loss_pct", "X1", "BUY", quantity=1, stop_loss_pct=100)
    refused("take_profit_price", "X1", "BUY", quantity=1, take_profit_price=0)


def test_trailing_and_leverage_ranges() -> None:
    refused("trailing_pct", "X1", "BUY", quantity=1, trailing_pct="0.09")
    refused("trailing_pct", "X1", "BUY", quantity=1, trailing_pct=11)
    refused("leverage", "X1", "BUY", quantity=1, leverage=0)
    refused("leverage", "X1", "BUY", quantity=1, leverage=126)
    refused("leverage", "X1", "BUY", quantity=1, leverage=True)
    assert build_intent("X1", "BUY", quantity=1, leverage=125)["leverage"] == 125


def test_symbol_and_intent_id_are_checked_as_quantum_checks_them() -> None:
    refused("symbol", "BTC/USDT", "BUY", quantity=1)
    refused("symbol", "B", "BUY", quantity=1)
    refused("intent_id", "BTCUSDT", "BUY", quantity=1, intent_id="")
    refused("intent_id", "BTCUSDT", "BUY", quantity=1, intent_id="x" * 129)
    refused("intent_id", "BTCUSDT", "BUY", quantity=1, intent_id="a\nb")
    # quantum refuses control characters only: spaces and other scripts are fine.
    assert build_intent("BTCUSDT", "BUY", quantity=1, intent_id="α β\u00a0γ")["intent_id"] == "α β\u00a0γ"


def test_generated_intent_ids_are_unique_and_fit_a_readable_client_order_id() -> None:
    ids = {new_intent_id() for _ in range(1000)}
    assert len(ids) == 1000
    # quantum's client order id is q-<intent_id> when that fits Binance's 36 characters.
    assert all(len("q-" + i) <= 36 for i in ids)


def test_expires_at_takes_milliseconds_or_an_aware_datetime() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    assert build_intent("X1", "BUY", quantity=1, expires_at=at)["expires_at"] == 1893553445678
    refused("expires_at", "X1", "BUY", quantity=1, expires_at=datetime(2030, 1, 1))
    refused("expires_at", "X1", "BUY", quantity=1, expires_at=1.5e12)


def test_position_side_is_sent_only_when_given() -> None:
    assert "position_side" not in build_intent("X1", "BUY", quantity=1)
    assert build_intent("X1", "BUY", quantity=1, position_side="short")["position_side"] == "SHORT"
    refused("position_side", "X1", "BUY", quantity=1, position_side="BOTH")
