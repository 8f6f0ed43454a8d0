"""Unit tests: reading result documents (fixtures written by the real binary, see
fixtures/README.md) and what wait_result makes of each status."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, Type

import pytest

from quantum_client import (
    ExecutionError,
    ExecutionFailed,
    FillTimeout,
    IntentExpired,
    IntentRejected,
    MalformedResult,
    OrderCanceled,
    QuantumError,
    ResultStatus,
    parse_result,
)
from quantum_client._common import MAX_REMEMBERED, entries_of, find, forget_oldest, outcome

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_text(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text().strip()


def fixture(name: str) -> Dict[str, Any]:
    doc = json.loads(fixture_text(name), parse_float=Decimal)
    assert isinstance(doc, dict)
    return doc


def test_a_filled_result_is_read_with_exact_decimals() -> None:
    text = fixture_text("filled")
    r = parse_result(text)
    assert r.status is ResultStatus.FILLED and r.has_fill
    doc = json.loads(text, parse_float=Decimal)
    for name in ("entry_price", "executed_qty", "position_size_usd", "commission"):
        value = getattr(r, name)
        assert isinstance(value, Decimal), name
        # The digits of the document, not a float's approximation of them.
        assert value == Decimal(str(doc[name])), name
    assert r.position_size_usd == r.entry_price * r.executed_qty
    assert r.intent_id and r.symbol and r.action == "BUY"
    assert r.order_id is not None and r.client_order_id == "q-" + r.intent_id
    assert r.confirmed_by in ("result_reply", "user_stream", "rest_poll")
    assert r.take_profit_pct == Decimal("2.5") and r.stop_loss_pct == Decimal("1.25")
    assert r.raw == doc
    assert outcome(r) is r


def test_a_partially_filled_result_is_returned_not_raised() -> None:
    r = parse_result(fixture_text("partially_filled"))
    assert r.status is ResultStatus.PARTIALLY_FILLED
    assert r.executed_qty > 0 and r.entry_price > 0
    assert outcome(r) is r


@pytest.mark.parametrize(
    "name, exception, status",
    [
        ("rejected_symbol", IntentRejected, "rejected"),
        ("rejected_exchange", IntentRejected, "rejected"),
        ("rejected_input", IntentRejected, "rejected"),
        ("expired", IntentExpired, "expired"),
        ("timeout", FillTimeout, "timeout"),
        ("canceled", OrderCanceled, "canceled"),
        ("failed", ExecutionFailed, "failed"),
    ],
)
def test_every_status_without_a_fill_raises_its_exception(
    name: str, exception: Type[ExecutionError], status: str
) -> None:
    r = parse_result(fixture_text(name))
    assert r.status.value == status and not r.has_fill
    with pytest.raises(exception) as info:
        outcome(r)
    e = info.value
    assert isinstance(e, QuantumError)
    assert e.status == status and e.reason == r.error and e.result is r
    assert e.reason, "quantum always says why"
    assert status in str(e)


def test_every_status_quantum_has_is_handled() -> None:
    # result.rs ResultStatus::ALL
    assert {s.value for s in ResultStatus} == {
        "filled", "partially_filled", "rejected", "canceled", "expired", "timeout", "failed",
    }
    for status in ResultStatus:
        doc = fixture("filled") if status.has_fill else fixture("timeout")
        doc["status"] = status.value
        r = parse_result(doc)
        if status.has_fill:
            assert outcome(r) is r
        else:
            with pytest.raises(ExecutionError):
                outcome(r)


def test_a_rejected_input_without_readable_fields_is_still_a_result() -> None:
    r = parse_result(fixture_text("rejected_input"))
    assert r.status is ResultStatus.REJECTED
    doc = fixture("rejected_input")
    doc.update(intent_id="", symbol="", action="")
    r = parse_result(doc)
    assert (r.intent_id, r.symbol, r.action) == ("", "", "")


def test_what_quantum_refuses_to_read_is_refused_here_too() -> None:
    filled = fixture("filled")
    for change in (
        {"status": "done"},
        {"status": None},
        {"entry_price": 0},  # the incident: a "fill" without a price
        {"executed_qty": Decimal("0.000")},
        {"entry_price": None},
        {"intent_id": ""},
        {"symbol": None},
        {"entry_price": "abc"},
        {"order_id": "12"},
        {"reduce_only": "no"},
    ):
        doc = dict(filled, **change)
        with pytest.raises(MalformedResult):
            parse_result(doc)
    with pytest.raises(MalformedResult):
        parse_result("[1]")
    with pytest.raises(MalformedResult):
        parse_result("{not json")
    doc = dict(fixture("timeout"), intent_id="")
    with pytest.raises(MalformedResult):
        parse_result(doc)


def test_unknown_commission_stays_unknown() -> None:
    doc = dict(fixture("filled"), commission=None)
    assert parse_result(doc).commission is None


def test_integer_json_numbers_are_decimals_too() -> None:
    # quantum writes 16, not 16.0, for a whole quantity; it must still be a Decimal.
    doc = fixture("filled")
    doc["executed_qty"] = 16
    doc["entry_price"] = 7
    doc.pop("position_size_usd")
    r = parse_result(doc)
    assert isinstance(r.executed_qty, Decimal) and r.position_size_usd == Decimal(112)


def test_find_reads_xread_replies_in_both_protocols_and_matches_the_intent_id() -> None:
    payload = fixture_text("filled")
    intent_id = fixture("filled")["intent_id"]
    other = fixture_text("expired")
    resp2 = [
        [b"quantum:stream:trade.execution.res", [
            (b"1-0", {b"payload": other.encode()}),
            (b"2-0", {b"other": b"x"}),
            (b"3-0", {b"payload": b"not json"}),
            (b"4-0", {b"payload": payload.encode()}),
        ]]
    ]
    resp3 = {"quantum:stream:trade.execution.res": [[
        ("1-0", {"payload": other}),
        ("4-0", {"payload": payload}),
    ]]}
    for reply in (resp2, resp3):
        entries = entries_of(reply)
        assert entries[0][0] == "1-0" and entries[-1][0] == "4-0"
        found = list(find(entries, intent_id))
        assert [r.intent_id for r in found] == [intent_id]
    assert entries_of(None) == [] and entries_of([]) == []


def test_a_malformed_result_for_the_awaited_intent_is_an_error_not_skipped() -> None:
    doc = dict(fixture("filled"), entry_price=0)
    entries = [("1-0", {"payload": json.dumps({k: str(v) if isinstance(v, Decimal) else v for k, v in doc.items()})})]
    with pytest.raises(MalformedResult):
        list(find(entries, doc["intent_id"]))


def test_a_client_remembers_a_bounded_number_of_unawaited_intents() -> None:
    since = {f"i-{n}": f"{n}-0" for n in range(MAX_REMEMBERED + 5)}
    forget_oldest(since)
    assert len(since) == MAX_REMEMBERED
    assert "i-4" not in since and "i-5" in since and f"i-{MAX_REMEMBERED + 4}" in since
