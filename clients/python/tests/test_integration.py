"""Integration tests: the client against the real `quantum execution` and `quantum sim` binaries
and a real redis-server (see conftest.py). Every figure a result reports is checked against the
simulator's own record of the order."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, List

import pytest
import redis

from conftest import World, wait_for
from quantum_client import (
    AsyncQuantumClient,
    ExecutionResult,
    IntentExpired,
    IntentRejected,
    QuantumClient,
    ResultStatus,
    ResultTimeout,
)
from quantum_client._common import RESULT_STREAM

pytestmark = pytest.mark.integration


def assert_matches_exchange(world: World, result: ExecutionResult) -> Dict[str, Any]:
    """The result's figures are the exchange's: same order, exact average price and quantity,
    notional = price × quantity, commission = the sum of the order's trades' commissions."""
    assert result.client_order_id is not None
    order = world.sim.order(result.symbol, result.client_order_id)
    assert order["status"] == "FILLED", order
    assert order["orderId"] == result.order_id
    assert isinstance(result.entry_price, Decimal) and isinstance(result.executed_qty, Decimal)
    assert result.entry_price == Decimal(order["avgPrice"]), (result.raw, order)
    assert result.executed_qty == Decimal(order["executedQty"]), (result.raw, order)
    assert result.position_size_usd == result.entry_price * result.executed_qty
    trades = world.sim.trades(result.symbol, order["orderId"])
    assert result.commission == sum((Decimal(t["commission"]) for t in trades), Decimal(0))
    assert result.confirmed_by in ("result_reply", "user_stream", "rest_poll")
    return order


def test_sync_buy_with_exit_plan_is_filled_at_the_exchanges_price(world: World) -> None:
    with QuantumClient(world.redis_url) as client:
        intent_id = client.publish_intent(
            "AXSUSDT",
            "BUY",
            position_size_usd=Decimal("100"),
            leverage=10,
            take_profit_pct=Decimal("2.5"),
            stop_loss_pct=Decimal("1.25"),
            source="pytest",
        )
        result = client.wait_result(intent_id, timeout=30)
    assert result.status is ResultStatus.FILLED
    assert (result.intent_id, result.symbol, result.action) == (intent_id, "AXSUSDT", "BUY")
    assert (result.take_profit_pct, result.stop_loss_pct) == (Decimal("2.5"), Decimal("1.25"))
    assert result.leverage == 10 and result.reduce_only is False
    assert result.raw["status"] == "filled"
    order = assert_matches_exchange(world, result)
    assert order["side"] == "BUY" and order["type"] == "MARKET"


def test_sync_quantity_and_then_a_close_of_that_quantity(world: World) -> None:
    with QuantumClient(world.redis_url) as client:
        opened = client.execute("ETHUSDT", "SELL", quantity=Decimal("0.013"), timeout=30)
        assert opened.executed_qty == Decimal("0.013")
        assert_matches_exchange(world, opened)
        closed = client.execute("ETHUSDT", "CLOSE", quantity=Decimal("0.013"), timeout=30)
    assert closed.status is ResultStatus.FILLED
    assert closed.reduce_only is True and closed.action == "CLOSE"
    order = assert_matches_exchange(world, closed)
    assert order["side"] == "BUY" and order["reduceOnly"] is True


def test_async_intents_in_parallel_are_each_matched_to_their_own_result(world: World) -> None:
    async def run() -> List[ExecutionResult]:
        async with AsyncQuantumClient(world.redis_url) as client:
            ids = [
                await client.publish_intent("SOLUSDT", "BUY", quantity=Decimal("0.5"), stop_loss_pct="2"),
                await client.publish_intent("BTCUSDT", "BUY", position_size_usd="300.5"),
                await client.publish_intent("XRPUSDT", "SELL", quantity="17.3", take_profit_price="1.5"),
            ]
            results = await asyncio.gather(*(client.wait_result(i, timeout=30) for i in ids))
            assert [r.intent_id for r in results] == ids
            return list(results)

    results = asyncio.run(run())
    assert [r.symbol for r in results] == ["SOLUSDT", "BTCUSDT", "XRPUSDT"]
    assert results[2].take_profit_price == Decimal("1.5")
    for result in results:
        assert result.status is ResultStatus.FILLED
        assert_matches_exchange(world, result)


def test_a_result_published_before_wait_result_is_called_is_not_missed(world: World) -> None:
    with QuantumClient(world.redis_url) as client:
        intent_id = client.publish_intent("DOGEUSDT", "BUY", quantity="60")
        r = redis.Redis.from_url(world.redis_url, decode_responses=True)

        def published() -> Any:
            for _id, fields in r.xrange(RESULT_STREAM, "-", "+") or []:
                if fields and f'"intent_id":"{intent_id}"' in str(fields.get("payload")):
                    return True
            return None

        wait_for("the result to be on the stream", published, timeout=30, log=world.execution.log)
        r.close()
        result = client.wait_result(intent_id, timeout=5)
    assert result.status is ResultStatus.FILLED
    assert_matches_exchange(world, result)


def test_an_unknown_symbol_is_rejected_with_the_reason(world: World) -> None:
    with QuantumClient(world.redis_url) as client:
        intent_id = client.publish_intent("NOPEUSDT", "BUY", quantity="1")
        with pytest.raises(IntentRejected) as info:
            client.wait_result(intent_id, timeout=30)
    e = info.value
    assert e.status == "rejected" and e.result.intent_id == intent_id
    assert e.reason and "NOPEUSDT" in e.reason, e.reason
    assert e.result.order_id is None


def test_an_order_the_exchange_rejects_raises_with_its_code(world: World) -> None:
    world.sim.faults(reject_orders={"code": -2019, "count": 1})
    try:
        async def run() -> None:
            async with AsyncQuantumClient(world.redis_url) as client:
                intent_id = await client.publish_intent("BNBUSDT", "BUY", quantity="0.2")
                with pytest.raises(IntentRejected) as info:
                    await client.wait_result(intent_id, timeout=30)
                assert info.value.error_code == -2019, info.value.result.raw
                assert info.value.reason, info.value.result.raw

        asyncio.run(run())
    finally:
        world.sim.faults(reset=True)


def test_an_intent_past_its_expires_at_is_expired(world: World) -> None:
    with QuantumClient(world.redis_url) as client:
        intent_id = client.publish_intent(
            "AXSUSDT", "BUY", quantity="2", expires_at=int(time.time() * 1000) - 1_000
        )
        with pytest.raises(IntentExpired) as info:
            client.wait_result(intent_id, timeout=30)
    assert info.value.status == "expired"
    assert info.value.result.order_id is None
    assert info.value.reason


def test_a_document_quantum_refuses_is_found_by_a_client_that_did_not_publish_it(world: World) -> None:
    # Published behind the client's back (an unknown field, which quantum refuses): wait_result
    # has no cursor for it and scans the retained result stream from its start.
    with QuantumClient(world.redis_url) as publisher:
        publisher.publish_document(
            "raw-1", '{"intent_id":"raw-1","symbol":"AXSUSDT","action":"BUY","quantity":1,"stop_loss_pc":1}'
        )
    with QuantumClient(world.redis_url) as client:
        with pytest.raises(IntentRejected) as info:
            client.wait_result("raw-1", timeout=30)
    assert info.value.reason and "stop_loss_pc" in info.value.reason


def test_no_result_in_time_raises_a_timeout_error(world: World) -> None:
    with QuantumClient(world.redis_url) as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            client.wait_result("never-published", timeout=0.5)
        assert isinstance(info.value, ResultTimeout)
        assert 0.5 <= time.monotonic() - started < 5

    async def run() -> None:
        async with AsyncQuantumClient(world.redis_url) as client:
            with pytest.raises(ResultTimeout):
                await client.wait_result("never-published-either", timeout=0.3)

    asyncio.run(run())


def test_the_example_strategy_prints_the_confirmed_fill(world: World) -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "simple_strategy.py"
    for extra in ([], ["--async"]):
        run = subprocess.run(
            [sys.executable, str(example), "--redis-url", world.redis_url, "--timeout", "30", *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "filled: BUY" in run.stdout and "AXSUSDT at" in run.stdout, run.stdout
