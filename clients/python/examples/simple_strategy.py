#!/usr/bin/env python3
"""A minimal strategy: opens a long with a take-profit and a stop-loss through quantum, and prints
the fill the exchange confirmed (or why there was none).

Against the simulator (three terminals, Redis on 127.0.0.1:6379):

    quantum sim                                                   # 1: the exchange
    BINANCE_API_KEY=quantum-sim-key BINANCE_SECRET_KEY=quantum-sim-secret \\
        quantum run --rest-url http://127.0.0.1:8090 --ws-url ws://127.0.0.1:8090   # 2: both services
    python clients/python/examples/simple_strategy.py             # 3: this

`quantum run` is the execution service and the exit monitor in one process; the exit monitor then
closes the position at the take-profit or stop-loss. `--async` does the same with
AsyncQuantumClient.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from decimal import Decimal

from quantum_client import (
    AsyncQuantumClient,
    ExecutionError,
    ExecutionResult,
    QuantumClient,
    ResultTimeout,
)


def describe(result: ExecutionResult) -> str:
    return (
        f"{result.status.value}: {result.action} {result.executed_qty} {result.symbol} "
        f"at {result.entry_price} (notional {result.position_size_usd} USDT, fee "
        f"{result.commission} {result.commission_asset}), order {result.order_id}, "
        f"confirmed by {result.confirmed_by}; exits: take-profit {result.take_profit_pct} %, "
        f"stop-loss {result.stop_loss_pct} %"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--symbol", default="AXSUSDT")
    parser.add_argument("--usd", type=Decimal, default=Decimal("100"), help="position size in USDT")
    parser.add_argument("--leverage", type=int, default=5)
    parser.add_argument("--tp-pct", type=Decimal, default=Decimal("2"))
    parser.add_argument("--sl-pct", type=Decimal, default=Decimal("1"))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the result")
    parser.add_argument("--async", dest="use_async", action="store_true", help="use AsyncQuantumClient")
    args = parser.parse_args()
    intent = dict(
        position_size_usd=args.usd,
        leverage=args.leverage,
        take_profit_pct=args.tp_pct,
        stop_loss_pct=args.sl_pct,
        source="simple-strategy",
    )
    try:
        if args.use_async:
            async def run() -> ExecutionResult:
                async with AsyncQuantumClient(args.redis_url) as client:
                    intent_id = await client.publish_intent(args.symbol, "BUY", **intent)
                    print(f"published intent {intent_id}; waiting for the confirmed fill")
                    return await client.wait_result(intent_id, timeout=args.timeout)

            result = asyncio.run(run())
        else:
            with QuantumClient(args.redis_url) as client:
                intent_id = client.publish_intent(args.symbol, "BUY", **intent)
                print(f"published intent {intent_id}; waiting for the confirmed fill")
                result = client.wait_result(intent_id, timeout=args.timeout)
    except ExecutionError as e:
        print(f"not filled: {e}", file=sys.stderr)
        return 1
    except ResultTimeout as e:
        print(str(e), file=sys.stderr)
        return 2
    print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
