#!/usr/bin/env python3
"""Drive `quantum sim` with ccxt's `binanceusdm` (ccxt.pro for the user data stream), unchanged.

Configuration only: every URL in `exchange.urls['api']` (REST and WebSocket) is pointed at the
simulator, and `options['fetchCurrencies'] = False` (with keys set, ccxt otherwise loads currencies
from the spot-wallet endpoint GET /sapi/v1/capital/config/getall, which a futures exchange lacks).

Each step prints PASS/FAIL; a failure prints ccxt's last request (method, URL, body) and the reply.

Usage: check_ccxt.py --http http://127.0.0.1:PORT --api-key K --api-secret S
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import traceback
from urllib.parse import urlsplit, urlunsplit

import ccxt
import ccxt.pro as ccxtpro

SYMBOL = "BTC/USDT:USDT"
SYMBOLS = ["BTC", "ETH", "AXS", "SOL", "BNB", "XRP", "DOGE"]


class CheckFailed(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def repoint(tree, http_base: str, ws_base: str):
    """Rewrites scheme and host of every URL in ccxt's urls['api'] tree, keeping the path."""
    h, w = urlsplit(http_base), urlsplit(ws_base)
    if isinstance(tree, dict):
        return {k: repoint(v, http_base, ws_base) for k, v in tree.items()}
    if isinstance(tree, str) and "://" in tree:
        u = urlsplit(tree)
        base = w if u.scheme in ("ws", "wss") else h
        return urlunsplit((base.scheme, base.netloc, u.path, u.query, u.fragment))
    return tree


class Check:
    def __init__(self, args):
        self.args = args
        self.http = args.http.rstrip("/")
        self.ws = "ws" + self.http[len("http"):]
        self.results = []
        self.ctx = {}
        self.ex = None

    def describe(self) -> str:
        ex = self.ex
        return (
            f"  request: {getattr(ex, 'last_request_url', None)} body={getattr(ex, 'last_request_body', None)!r}\n"
            f"  reply: {str(getattr(ex, 'last_http_response', None))[:1200]}"
        )

    async def run(self, name, fn, extra=False):
        t0 = time.time()
        try:
            detail = await fn() or ""
            status = "PASS"
        except CheckFailed as e:
            status, detail = "FAIL", f"{e}\n  last HTTP exchange:\n{self.describe()}"
        except ccxt.BaseError as e:
            status, detail = "FAIL", f"{type(e).__name__}: {e}\n  last HTTP exchange:\n{self.describe()}"
        except Exception as e:  # noqa: BLE001
            status = "FAIL"
            detail = f"{type(e).__name__}: {e}\n  last HTTP exchange:\n{self.describe()}\n" + traceback.format_exc(limit=5)
        tag = " [extra]" if extra else ""
        print(f"{status} ccxt.{name}{tag} ({time.time() - t0:.2f}s): {detail}", flush=True)
        self.results.append((name, status, extra))

    async def wait_closed(self, order_id, timeout=10.0):
        deadline = time.time() + timeout
        seen = []
        while True:
            o = await self.ex.fetch_order(order_id, SYMBOL)
            if not seen or seen[-1] != o["status"]:
                seen.append(o["status"])
            if o["status"] == "closed":
                return o, seen
            if time.time() > deadline:
                raise CheckFailed(f"order {order_id} not closed after {timeout}s; statuses {seen}; {o['info']}")
            await asyncio.sleep(0.2)

    async def position_amt(self) -> float:
        # Raw positionRisk through ccxt's implicit API, so this does not depend on fetch_positions
        # (which also needs GET /fapi/v1/leverageBracket).
        rows = await self.ex.fapiPrivateV3GetPositionRisk({"symbol": "BTCUSDT"})
        return sum(float(r["positionAmt"]) for r in rows if r.get("symbol") == "BTCUSDT")

    # ------------------------------------------------------------------ steps
    async def s_load_markets(self):
        markets = await self.ex.load_markets()
        missing = [b for b in SYMBOLS if f"{b}/USDT:USDT" not in markets]
        expect(not missing, f"markets lack {missing}; have {sorted(markets)[:20]}")
        m = markets[SYMBOL]
        expect(m["precision"]["amount"] and m["precision"]["price"], f"precision: {m['precision']}")
        expect(m["limits"]["cost"]["min"], f"min notional missing: {m['limits']}")
        return f"{len(markets)} markets; {SYMBOL} precision={m['precision']} limits.cost={m['limits']['cost']}"

    async def s_fetch_time(self):
        t = await self.ex.fetch_time()
        expect(abs(t - self.ex.milliseconds()) < 5000, f"time {t}")
        return f"{t}"

    async def s_fetch_ticker(self):
        t = await self.ex.fetch_ticker(SYMBOL)
        expect(t["last"], f"ticker {t}")
        return f"last={t['last']} bid={t['bid']} ask={t['ask']}"

    async def s_fetch_order_book(self):
        ob = await self.ex.fetch_order_book(SYMBOL, 10)
        expect(ob["bids"] and ob["asks"] and ob["bids"][0][0] < ob["asks"][0][0], f"book {ob}")
        return f"best {ob['bids'][0]} / {ob['asks'][0]}"

    async def s_fetch_funding_rate(self):
        fr = await self.ex.fetch_funding_rate(SYMBOL)
        expect(fr["markPrice"], f"funding {fr}")
        self.ctx["mark"] = fr["markPrice"]
        return f"markPrice={fr['markPrice']} fundingRate={fr['fundingRate']}"

    async def s_set_leverage(self):
        r = await self.ex.set_leverage(10, SYMBOL)
        return f"{r}"

    async def s_set_margin_mode(self):
        out = []
        for mode in ("isolated", "cross"):
            try:
                out.append(f"{mode}: {await self.ex.set_margin_mode(mode, SYMBOL)}")
            except ccxt.MarginModeAlreadySet as e:
                out.append(f"{mode}: already set ({e})")
        return "; ".join(out)

    async def s_fetch_position_mode(self):
        r = await self.ex.fetch_position_mode(SYMBOL)
        expect(r["hedged"] is False, f"{r}")
        return f"hedged={r['hedged']}"

    async def s_market_buy(self):
        o = await self.ex.create_order(SYMBOL, "market", "buy", 0.002)
        self.ctx["market"] = o
        o2, seen = await self.wait_closed(o["id"])
        expect(o2["average"] and o2["average"] > 0, f"average {o2['average']}")
        expect(abs(o2["filled"] - 0.002) < 1e-9, f"filled {o2['filled']}")
        return f"id={o['id']} first status={o['status']}; statuses {seen}; average={o2['average']}"

    async def s_limit_cycle(self):
        mark = self.ctx.get("mark") or (await self.ex.fetch_ticker(SYMBOL))["last"]
        price = float(self.ex.price_to_precision(SYMBOL, mark * 0.96))
        t0 = time.time()
        o = await self.ex.create_order(SYMBOL, "limit", "buy", 0.002, price)  # ccxt sends newOrderRespType=RESULT
        took = time.time() - t0
        expect(o["status"] == "open", f"limit status {o['status']}: {o['info']}")
        if took > 2.0:
            await self.ex.cancel_order(o["id"], SYMBOL)
            raise CheckFailed(
                f"create_order(limit) answered after {took:.2f} s (ccxt's timeout is 10 s; Binance answers "
                f"a resting LIMIT with newOrderRespType=RESULT at once, status NEW); request body "
                f"{self.ex.last_request_body!r}")
        opens = await self.ex.fetch_open_orders(SYMBOL)
        expect(o["id"] in [x["id"] for x in opens], f"not in open orders {[x['id'] for x in opens]}")
        q = await self.ex.fetch_order(o["id"], SYMBOL)
        expect(q["status"] == "open" and q["price"] == price, f"fetch_order {q['info']}")
        allo = await self.ex.fetch_orders(SYMBOL)
        expect(o["id"] in [x["id"] for x in allo], "not in fetch_orders")
        c = await self.ex.cancel_order(o["id"], SYMBOL)
        expect(c["status"] == "canceled", f"cancel {c['info']}")
        return f"limit {o['id']} @ {price}: open -> listed -> fetched -> canceled"

    async def s_edit_and_batch(self):
        mark = self.ctx.get("mark") or (await self.ex.fetch_ticker(SYMBOL))["last"]
        price = float(self.ex.price_to_precision(SYMBOL, mark * 0.96))
        lower = float(self.ex.price_to_precision(SYMBOL, mark * 0.95))
        o = await self.ex.create_order(SYMBOL, "limit", "buy", 0.002, price)
        e = await self.ex.edit_order(o["id"], SYMBOL, "limit", "buy", 0.003, lower)  # PUT /fapi/v1/order
        expect(e["id"] == o["id"] and e["price"] == lower and e["amount"] == 0.003, f"edit_order {e['info']}")
        batch = await self.ex.create_orders([  # POST /fapi/v1/batchOrders
            {"symbol": SYMBOL, "type": "limit", "side": "buy", "amount": 0.002, "price": lower},
            {"symbol": SYMBOL, "type": "limit", "side": "buy", "amount": 0.002, "price": price},
        ])
        expect(len(batch) == 2 and all(b["status"] == "open" for b in batch), f"create_orders {[b['info'] for b in batch]}")
        ids = [o["id"]] + [b["id"] for b in batch]
        cancelled = await self.ex.cancel_orders(ids, SYMBOL)  # DELETE /fapi/v1/batchOrders
        expect([c["status"] for c in cancelled] == ["canceled"] * 3, f"cancel_orders {[c['info'] for c in cancelled]}")
        return f"edit {o['id']} -> {lower} x 0.003; create_orders {[b['id'] for b in batch]}; cancel_orders all 3"

    async def s_my_trades(self):
        ts = await self.ex.fetch_my_trades(SYMBOL)
        mine = [t for t in ts if t["order"] == self.ctx["market"]["id"]]
        expect(mine, f"no trade for market order; {len(ts)} trades")
        return f"{len(mine)} trade(s), price {mine[0]['price']}, fee {mine[0]['fee']}"

    async def s_positions(self):
        ps = await self.ex.fetch_positions([SYMBOL])
        p = [x for x in ps if x["symbol"] == SYMBOL]
        expect(p and abs((p[0]["contracts"] or 0) - 0.002) < 1e-9 and p[0]["side"] == "long", f"positions {ps}")
        return f"contracts={p[0]['contracts']} side={p[0]['side']} entryPrice={p[0]['entryPrice']} leverage={p[0]['leverage']}"

    async def s_balance(self):
        b = await self.ex.fetch_balance()
        expect(b.get("USDT", {}).get("total"), f"balance {b.get('USDT')}")
        return f"USDT {b['USDT']}"

    async def s_stop_market(self):
        mark = self.ctx.get("mark") or (await self.ex.fetch_ticker(SYMBOL))["last"]
        trigger = float(self.ex.price_to_precision(SYMBOL, mark * 0.97))
        o = await self.ex.create_order(SYMBOL, "STOP_MARKET", "sell", None, None,
                                       {"stopPrice": trigger, "closePosition": True})
        opens = await self.ex.fetch_open_orders(SYMBOL, params={"trigger": True})
        expect(o["id"] in [x["id"] for x in opens], f"trigger order {o['id']} not in open trigger orders {[x['id'] for x in opens]}")
        c = await self.ex.cancel_order(o["id"], SYMBOL, {"trigger": True})
        return f"id={o['id']} trigger={trigger}; cancel -> {c.get('status')} {c.get('info')}"

    async def s_watch_orders(self):
        # ccxt.pro: listenKey via POST /fapi/v1/listenKey, then ws://.../ws/<listenKey>. Every update
        # lands in exchange.orders; one arriving between two watch_orders() calls does not resolve
        # the next call (ccxt's newUpdates semantics), so the cache is checked as well.
        task = asyncio.ensure_future(self.ex.watch_orders(SYMBOL))
        await asyncio.sleep(1.0)
        o = await self.ex.create_order(SYMBOL, "market", "buy", 0.002)
        deadline = time.time() + 15
        returned, cached = [], []
        try:
            while time.time() < deadline:
                done, _ = await asyncio.wait({task}, timeout=0.5)
                if task in done:
                    returned += [x["status"] for x in task.result() if x["id"] == o["id"]]
                    task = asyncio.ensure_future(self.ex.watch_orders(SYMBOL))
                cached = [x["status"] for x in (self.ex.orders or []) if x["id"] == o["id"]]
                if "closed" in returned or "closed" in cached:
                    return f"order {o['id']} via listenKey stream: watch_orders returned {returned}, cache {cached}"
        finally:
            task.cancel()
        raise CheckFailed(f"no closed update for {o['id']} within 15 s; returned {returned}, cache {cached}")

    async def s_watch_order_book(self):
        # ccxt.pro keeps a local book from <symbol>@depth diffs and a REST snapshot, Binance's
        # procedure: it checks U/u/pu itself and raises on a gap. Updates come as the price ticks.
        nonces, same = [], None
        deadline = time.time() + 15
        while time.time() < deadline and (len(nonces) < 4 or same is None):
            ob = await self.ex.watch_order_book(SYMBOL)
            expect(ob["bids"] and ob["asks"] and ob["bids"][0][0] < ob["asks"][0][0], f"crossed or empty book {ob}")
            if not nonces or ob["nonce"] != nonces[-1]:
                nonces.append(ob["nonce"])
            rest = await self.ex.fetch_order_book(SYMBOL, 20)
            if rest["nonce"] == ob["nonce"]:
                # The same book id: the local book must be the exchange's book, level by level.
                same = ob["bids"][:20] == rest["bids"][:20] and ob["asks"][:20] == rest["asks"][:20]
                expect(same, f"local book at {ob['nonce']} differs from the snapshot: {ob['bids'][:3]} vs {rest['bids'][:3]}")
        expect(len(nonces) >= 4, f"only {len(nonces)} book updates in 15 s: {nonces}")
        expect(nonces == sorted(nonces), f"update ids went back: {nonces}")
        expect(same is not None, "never caught the REST snapshot at the local book's update id")
        return f"{len(nonces)} updates, ids {nonces[0]}..{nonces[-1]}; local book == snapshot at one id"

    async def s_close(self):
        amt = await self.position_amt()
        expect(amt > 0, f"position {amt}")
        o = await self.ex.create_order(SYMBOL, "market", "sell", amt, None, {"reduceOnly": True})
        o2, seen = await self.wait_closed(o["id"])
        after = await self.position_amt()
        expect(after == 0, f"position after close {after}")
        return f"sold {amt} reduceOnly; statuses {seen}; position now {after}"

    async def main(self) -> int:
        self.ex = ccxtpro.binanceusdm({
            "apiKey": self.args.api_key,
            "secret": self.args.api_secret,
            "options": {"fetchCurrencies": False},
        })
        self.ex.urls["api"] = repoint(self.ex.urls["api"], self.http, self.ws)
        print(f"ccxt {ccxt.__version__} binanceusdm against {self.http}", flush=True)
        try:
            R = self.run
            await R("load_markets", self.s_load_markets)
            await R("fetch_time", self.s_fetch_time)
            await R("fetch_ticker", self.s_fetch_ticker)
            await R("fetch_order_book", self.s_fetch_order_book)
            await R("fetch_funding_rate", self.s_fetch_funding_rate)
            await R("set_leverage", self.s_set_leverage)
            await R("set_margin_mode", self.s_set_margin_mode)
            await R("fetch_position_mode", self.s_fetch_position_mode)
            await R("market_buy_and_fetch_order", self.s_market_buy)
            await R("limit_open_list_fetch_cancel", self.s_limit_cycle)
            await R("edit_order_create_orders_cancel_orders", self.s_edit_and_batch)
            await R("fetch_my_trades", self.s_my_trades)
            await R("fetch_positions", self.s_positions)
            await R("fetch_balance", self.s_balance)
            await R("stop_market_close_position", self.s_stop_market)
            await R("watch_orders", self.s_watch_orders)
            await R("watch_order_book", self.s_watch_order_book)
            await R("reduce_only_close", self.s_close)
        finally:
            await self.ex.close()
        passed = sum(1 for r in self.results if r[1] == "PASS")
        failed = sum(1 for r in self.results if r[1] != "PASS")
        print(f"ccxt: {passed} passed, {failed} failed")
        return 1 if failed else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http", default=os.environ.get("QUANTUM_SIM_URL", "http://127.0.0.1:8090"))
    p.add_argument("--api-key", default=os.environ.get("QUANTUM_SIM_API_KEY", "quantum-sim-key"))
    p.add_argument("--api-secret", default=os.environ.get("QUANTUM_SIM_API_SECRET", "quantum-sim-secret"))
    args = p.parse_args()
    return asyncio.run(Check(args).main())


if __name__ == "__main__":
    sys.exit(main())
