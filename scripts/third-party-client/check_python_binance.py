#!/usr/bin/env python3
"""Drive `quantum sim` with python-binance (pinned in requirements.txt), unchanged.

The client is only *configured*: the URL attributes python-binance builds every request from
(`FUTURES_URL`, `FUTURES_DATA_URL`, `API_URL` on the client; `FSTREAM_URL`/`STREAM_URL` on the
websocket manager; the client's `ws_future` WebSocket API connection, built from a URL) are
pointed at the simulator. No request logic is patched.

Each step prints PASS/FAIL/SKIP with details; a failure prints the HTTP request the client sent
(method, URL with query, content type, body) and the simulator's reply. Steps marked [extra] go
beyond the issue's requirement and do not change the exit code unless --strict is given.

Usage: check_python_binance.py --http http://127.0.0.1:PORT --api-key K --api-secret S
       [--ed25519-api-key K2 --ed25519-private-key PEM]   (the simulator knows K2's public key)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import queue
import sys
import time
import traceback
from decimal import ROUND_DOWN, ROUND_UP, Decimal

import binance
from binance.async_client import AsyncClient
from binance.client import Client
from binance.exceptions import BinanceAPIException, BinanceRequestException
from binance.ws.depthcache import FuturesDepthCacheManager
from binance.ws.streams import BinanceSocketManager, ThreadedWebsocketManager
from binance.ws.websocket_api import WebsocketAPI
from pathlib import Path

SYMBOLS = ["BTCUSDT", "ETHUSDT", "AXSUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT"]
REQUIRED_FILTERS = ["PRICE_FILTER", "LOT_SIZE", "MARKET_LOT_SIZE", "MIN_NOTIONAL"]
# Fields of ORDER_TRADE_UPDATE's "o" object that any consumer reads.
OTU_CORE_FIELDS = ["s", "c", "S", "o", "f", "q", "p", "ap", "x", "X", "i", "l", "z", "L", "T", "ps"]
OTU_MORE_FIELDS = ["sp", "N", "n", "t", "b", "a", "m", "R", "wt", "ot", "cp", "rp", "pP", "si", "ss", "V", "pm", "gtd"]


class CheckFailed(Exception):
    pass


class Skip(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def dec(value) -> Decimal:
    return Decimal(str(value))


def fmt(d: Decimal) -> str:
    """Plain decimal string without exponent or trailing zeros."""
    text = format(d.normalize(), "f")
    return text


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_UP) * step


def describe_exchange(resp) -> str:
    """The HTTP request python-binance sent and the reply it got (requests or aiohttp)."""
    if resp is None:
        return "  (no HTTP exchange recorded)"
    req = getattr(resp, "request", None)
    if req is not None and hasattr(req, "body"):  # requests
        body = req.body
        if isinstance(body, bytes):
            body = body.decode(errors="replace")
        return (
            f"  request: {req.method} {req.url}\n"
            f"  request content-type: {req.headers.get('Content-Type')}; X-MBX-APIKEY: "
            f"{'set' if req.headers.get('X-MBX-APIKEY') else 'missing'}\n"
            f"  request body: {body!r}\n"
            f"  reply: HTTP {resp.status_code} {resp.text[:1200]}"
        )
    info = getattr(resp, "request_info", None)  # aiohttp
    if info is not None:
        return f"  request: {info.method} {info.url}\n  reply: HTTP {resp.status}"
    return f"  (unrecognised response object {resp!r})"


class Check:
    def __init__(self, args):
        self.args = args
        self.http = args.http.rstrip("/")
        self.ws = args.ws or ("ws" + self.http[len("http"):] + "/")
        if not self.ws.endswith("/"):
            self.ws += "/"
        self.symbol = args.symbol
        self.results: list[tuple[str, str, bool, str]] = []
        self.status: dict[str, str] = {}
        self.ctx: dict = {}
        self.warnings: list[str] = []
        self.client = Client(args.api_key, args.api_secret, ping=False, verbose=args.verbose)
        self.configure(self.client)

    # ---------------------------------------------------------------- configuration only
    def configure(self, client):
        """Point python-binance's URL attributes at the simulator (configuration, no patching)."""
        client.API_URL = self.http + "/api"
        client.FUTURES_URL = self.http + "/fapi"
        client.FUTURES_DATA_URL = self.http + "/futures/data"

    def configure_ws_api(self, client):
        """The futures WebSocket API connection: python-binance builds `ws_future` in its constructor
        from `WS_FUTURES_URL` (wss://ws-fapi.binance.<tld>/ws-fapi/v1); replace it with one to the
        simulator's `/ws-fapi/v1` (configuration: the request and signing code stays python-binance's)."""
        client.ws_future = WebsocketAPI(url=self.ws + "ws-fapi/v1", tld="com")

    def configure_bsm(self, bsm):
        bsm.FSTREAM_URL = self.ws
        bsm.STREAM_URL = self.ws

    def async_client(self) -> AsyncClient:
        # Constructed directly (AsyncClient.create() would first ping the *spot* /api/v3/ping).
        ac = AsyncClient(self.args.api_key, self.args.api_secret, verbose=self.args.verbose)
        self.configure(ac)
        return ac

    # ---------------------------------------------------------------- runner
    def warn(self, msg):
        if msg not in self.warnings:
            self.warnings.append(msg)

    def run(self, name, fn, needs=(), extra=False):
        missing = [n for n in needs if self.status.get(n) != "PASS"]
        self.warnings = []
        t0 = time.time()
        if missing:
            status, detail = "SKIP", f"needs {', '.join(missing)}"
        else:
            try:
                detail = fn() or ""
                status = "PASS"
            except Skip as e:
                status, detail = "SKIP", str(e)
            except CheckFailed as e:
                status = "FAIL"
                detail = f"{e}\n  last HTTP exchange:\n{describe_exchange(self.client.response)}"
            except BinanceAPIException as e:
                status = "FAIL"
                detail = (
                    f"BinanceAPIException HTTP {e.status_code} code={e.code} msg={e.message!r}\n"
                    f"{describe_exchange(e.response)}"
                )
            except BinanceRequestException as e:
                status = "FAIL"
                detail = f"{e}\n{describe_exchange(self.client.response)}"
            except Exception as e:  # noqa: BLE001 - report everything
                status = "FAIL"
                detail = (
                    f"{type(e).__name__}: {e}\n  last HTTP exchange:\n{describe_exchange(self.client.response)}\n"
                    + "".join(traceback.format_exc(limit=6))
                )
        dt = time.time() - t0
        tag = " [extra]" if extra else ""
        print(f"{status} {name}{tag} ({dt:.2f}s): {detail}", flush=True)
        for w in self.warnings:
            print(f"    WARN {name}: {w}", flush=True)
        self.status[name] = status
        self.results.append((name, status, extra, detail))

    # ---------------------------------------------------------------- helpers
    def spec(self, symbol=None):
        return self.ctx["symbols"][symbol or self.symbol]

    def mark(self) -> Decimal:
        return dec(self.client.futures_mark_price(symbol=self.symbol)["markPrice"])

    def position_amt(self) -> Decimal:
        rows = self.client.futures_position_information(symbol=self.symbol)
        expect(isinstance(rows, list), f"positionRisk should be a list, got {type(rows).__name__}: {rows!r}")
        total = Decimal(0)
        for r in rows:
            if r.get("symbol") == self.symbol:
                total += dec(r["positionAmt"])
        return total

    def wait_order(self, order_id, want=("FILLED",), timeout=10.0, client_order=None):
        deadline = time.time() + timeout
        seen = []
        while True:
            o = self.client.futures_get_order(symbol=self.symbol, orderId=order_id)
            if not seen or seen[-1] != o.get("status"):
                seen.append(o.get("status"))
            if o.get("status") in want:
                return o, seen
            if time.time() > deadline:
                raise CheckFailed(
                    f"order {order_id} not {'/'.join(want)} after {timeout}s; statuses seen {seen}; last {o}"
                )
            time.sleep(0.2)

    # ---------------------------------------------------------------- market data
    def step_ping(self):
        r = self.client.futures_ping()
        expect(r == {}, f"expected {{}}, got {r!r}")
        return "GET /fapi/v1/ping -> {}"

    def step_time(self):
        r = self.client.futures_time()
        st = r.get("serverTime")
        expect(isinstance(st, int), f"serverTime should be an integer, got {r!r}")
        skew = st - int(time.time() * 1000)
        expect(abs(skew) < 5000, f"serverTime {st} is {skew} ms from local clock")
        return f"serverTime={st} (skew {skew} ms)"

    def step_exchange_info(self):
        r = self.client.futures_exchange_info()
        expect(isinstance(r.get("symbols"), list), f"'symbols' missing or not a list: keys={list(r)}")
        for k in ("timezone", "serverTime", "rateLimits", "assets"):
            if k not in r:
                self.warn(f"exchangeInfo lacks top-level '{k}'")
        by = {s.get("symbol"): s for s in r["symbols"]}
        missing = [s for s in SYMBOLS if s not in by]
        expect(not missing, f"symbols missing: {missing}; present: {sorted(by)}")
        specs = {}
        for name in SYMBOLS:
            s = by[name]
            filters = {f.get("filterType"): f for f in s.get("filters", [])}
            lack = [f for f in REQUIRED_FILTERS if f not in filters]
            expect(not lack, f"{name} lacks filters {lack}; has {list(filters)}")
            expect(s.get("status") == "TRADING", f"{name} status {s.get('status')!r}, expected TRADING")
            expect(s.get("contractType") == "PERPETUAL", f"{name} contractType {s.get('contractType')!r}")
            expect(s.get("quoteAsset") == "USDT", f"{name} quoteAsset {s.get('quoteAsset')!r}")
            for k in ("pricePrecision", "quantityPrecision"):
                expect(isinstance(s.get(k), int), f"{name}.{k} should be an integer, got {s.get(k)!r}")
            for k in ("baseAsset", "marginAsset", "orderTypes", "timeInForce", "pair"):
                if k not in s:
                    self.warn(f"{name} lacks '{k}'")
            if "PERCENT_PRICE" not in filters:
                self.warn(f"{name} lacks PERCENT_PRICE filter")
            for t in ("LIMIT", "MARKET", "STOP_MARKET"):
                if t not in s.get("orderTypes", []):
                    self.warn(f"{name}.orderTypes lacks {t}")
            pf, lot = filters["PRICE_FILTER"], filters["LOT_SIZE"]
            mn = filters["MIN_NOTIONAL"]
            expect("notional" in mn, f"{name} MIN_NOTIONAL should carry 'notional' (USD-M shape), got {mn}")
            specs[name] = {
                "tick": dec(pf["tickSize"]),
                "step": dec(lot["stepSize"]),
                "min_qty": dec(lot["minQty"]),
                "min_notional": dec(mn["notional"]),
                "mult_down": dec(filters.get("PERCENT_PRICE", {}).get("multiplierDown", "0.95")),
            }
        self.ctx["symbols"] = specs
        b = specs[self.symbol]
        return (
            f"{len(r['symbols'])} symbols incl. all 7; {self.symbol} tick={b['tick']} step={b['step']} "
            f"minNotional={b['min_notional']} multiplierDown={b['mult_down']}"
        )

    def step_mark_price(self):
        r = self.client.futures_mark_price(symbol=self.symbol)
        expect(isinstance(r, dict), f"expected an object for symbol=, got {r!r}")
        for k in ("symbol", "markPrice", "indexPrice", "lastFundingRate", "nextFundingTime", "time"):
            expect(k in r, f"premiumIndex lacks '{k}': {r}")
        expect(isinstance(r["markPrice"], str), f"markPrice should be a string decimal, got {r['markPrice']!r}")
        m = dec(r["markPrice"])
        expect(m > 0, f"markPrice {m} not > 0")
        self.ctx["mark"] = m
        allr = self.client.futures_mark_price()
        expect(isinstance(allr, list), f"premiumIndex without symbol should be a list, got {type(allr).__name__}")
        missing = [s for s in SYMBOLS if s not in {x.get('symbol') for x in allr}]
        expect(not missing, f"premiumIndex list lacks {missing}")
        return f"{self.symbol} markPrice={r['markPrice']}; list of {len(allr)}"

    def step_symbol_ticker(self):
        r = self.client.futures_symbol_ticker(symbol=self.symbol)  # GET /fapi/v2/ticker/price
        expect(isinstance(r, dict) and r.get("symbol") == self.symbol, f"unexpected reply {r!r}")
        expect(dec(r["price"]) > 0, f"price not > 0: {r}")
        if "time" not in r:
            self.warn("ticker/price lacks 'time'")
        return f"price={r['price']}"

    def step_book_ticker(self):
        r = self.client.futures_orderbook_ticker(symbol=self.symbol)
        for k in ("symbol", "bidPrice", "bidQty", "askPrice", "askQty", "time"):
            expect(k in r, f"bookTicker lacks '{k}': {r}")
        expect(0 < dec(r["bidPrice"]) < dec(r["askPrice"]), f"bid/ask not 0 < bid < ask: {r}")
        return f"bid={r['bidPrice']} ask={r['askPrice']}"

    def step_order_book(self):
        r = self.client.futures_order_book(symbol=self.symbol, limit=10)
        for k in ("lastUpdateId", "E", "T", "bids", "asks"):
            expect(k in r, f"depth lacks '{k}': keys={list(r)}")
        expect(r["bids"] and r["asks"], f"empty book: {r}")
        expect(len(r["bids"]) <= 10 and len(r["asks"]) <= 10, f"limit=10 not honoured: {len(r['bids'])}/{len(r['asks'])}")
        expect(all(isinstance(x, str) for lvl in r["bids"][:1] + r["asks"][:1] for x in lvl),
               f"levels should be [price, qty] strings: {r['bids'][:1]} {r['asks'][:1]}")
        bb, ba = dec(r["bids"][0][0]), dec(r["asks"][0][0])
        expect(bb < ba, f"best bid {bb} >= best ask {ba}")
        return f"{len(r['bids'])} bids / {len(r['asks'])} asks, best {bb} / {ba}"

    def step_ticker_24h(self):
        r = self.client.futures_ticker(symbol=self.symbol)
        for k in ("symbol", "lastPrice", "volume", "openTime", "closeTime"):
            expect(k in r, f"ticker/24hr lacks '{k}': {r}")
        return f"lastPrice={r['lastPrice']}"

    def step_klines(self):
        r = self.client.futures_klines(symbol=self.symbol, interval="1m", limit=5)
        expect(isinstance(r, list), f"klines should be a list: {r!r}")
        if r:
            expect(len(r[0]) >= 11, f"kline row should have 12 fields: {r[0]}")
        return f"{len(r)} klines"

    # ---------------------------------------------------------------- account settings
    def step_leverage(self):
        r = self.client.futures_change_leverage(symbol=self.symbol, leverage=10)
        expect(r.get("symbol") == self.symbol, f"unexpected reply {r!r}")
        expect(int(r.get("leverage")) == 10, f"leverage {r.get('leverage')!r}, expected 10")
        if "maxNotionalValue" not in r:
            self.warn("leverage reply lacks 'maxNotionalValue'")
        return f"{r}"

    def step_margin_type(self):
        out = []
        for mt in ("ISOLATED", "CROSSED"):
            try:
                r = self.client.futures_change_margin_type(symbol=self.symbol, marginType=mt)
                out.append(f"{mt}: {r}")
            except BinanceAPIException as e:
                if e.code == -4046:
                    out.append(f"{mt}: -4046 {e.message}")
                else:
                    raise
        return "; ".join(out)

    def step_position_mode(self):
        r = self.client.futures_get_position_mode()
        expect("dualSidePosition" in r, f"unexpected reply {r!r}")
        expect(r["dualSidePosition"] is False, f"dualSidePosition should be false (one-way) by default: {r}")
        return f"{r}"

    # ---------------------------------------------------------------- orders
    def step_market_buy(self):
        r = self.client.futures_create_order(symbol=self.symbol, side="BUY", type="MARKET", quantity="0.002")
        for k in ("orderId", "clientOrderId", "status", "symbol", "side", "type", "origQty", "executedQty", "updateTime"):
            expect(k in r, f"order reply lacks '{k}': {r}")
        expect(isinstance(r["orderId"], int), f"orderId should be an integer: {r['orderId']!r}")
        expect(r["clientOrderId"].startswith("x-Cb7ytekJ"), f"clientOrderId not echoed: {r['clientOrderId']!r}")
        if r["status"] != "NEW":
            self.warn(f"ACK reply status is {r['status']!r} (Binance answers NEW)")
        self.ctx["market_order"] = r
        return f"orderId={r['orderId']} status={r['status']} executedQty={r['executedQty']}"

    def step_market_filled(self):
        oid = self.ctx["market_order"]["orderId"]
        o, seen = self.wait_order(oid)
        expect(dec(o["avgPrice"]) > 0, f"avgPrice not > 0: {o}")
        expect(dec(o["executedQty"]) == dec("0.002"), f"executedQty {o['executedQty']} != 0.002")
        expect(dec(o.get("cumQuote", "0")) > 0, f"cumQuote not > 0: {o}")
        self.ctx["market_fill"] = o
        return f"statuses {seen}; avgPrice={o['avgPrice']} executedQty={o['executedQty']} cumQuote={o['cumQuote']}"

    def step_limit_buy(self):
        s = self.spec()
        mark = self.mark()
        factor = max(s["mult_down"] + Decimal("0.01"), Decimal("0.90"))
        price = floor_to(mark * factor, s["tick"])
        qty = max(s["min_qty"], ceil_to(s["min_notional"] * Decimal("1.2") / price, s["step"]), dec("0.002"))
        coid = f"qpc-limit-{int(time.time() * 1000)}"
        r = self.client.futures_create_order(
            symbol=self.symbol, side="BUY", type="LIMIT", timeInForce="GTC",
            quantity=fmt(qty), price=fmt(price), newClientOrderId=coid,
        )
        expect(r.get("clientOrderId") == coid, f"clientOrderId {r.get('clientOrderId')!r} != {coid!r}")
        expect(r.get("status") == "NEW", f"status {r.get('status')!r}, expected NEW: {r}")
        expect(dec(r.get("price", "0")) == price, f"price {r.get('price')!r} != {price}")
        self.ctx["limit"] = {"orderId": r["orderId"], "coid": coid, "price": price, "qty": qty}
        return f"orderId={r['orderId']} price={r['price']} qty={r['origQty']} (mark {mark})"

    def step_open_orders(self):
        r = self.client.futures_get_open_orders(symbol=self.symbol)
        expect(isinstance(r, list), f"openOrders should be a list: {r!r}")
        ids = [o.get("orderId") for o in r]
        expect(self.ctx["limit"]["orderId"] in ids, f"limit order {self.ctx['limit']['orderId']} not in {ids}")
        return f"{len(r)} open: {ids}"

    def step_get_order_by_coid(self):
        lim = self.ctx["limit"]
        o = self.client.futures_get_order(symbol=self.symbol, origClientOrderId=lim["coid"])
        expect(o.get("orderId") == lim["orderId"], f"orderId {o.get('orderId')} != {lim['orderId']}: {o}")
        expect(o.get("status") == "NEW", f"status {o.get('status')!r}")
        expect(o.get("type") == "LIMIT" and o.get("timeInForce") == "GTC", f"type/timeInForce: {o}")
        expect(dec(o["price"]) == lim["price"], f"price {o['price']} != {lim['price']}")
        return f"orderId={o['orderId']} status={o['status']} price={o['price']}"

    def step_all_orders(self):
        r = self.client.futures_get_all_orders(symbol=self.symbol)
        expect(isinstance(r, list), f"allOrders should be a list: {r!r}")
        by = {o.get("orderId"): o for o in r}
        m, lim = self.ctx["market_order"]["orderId"], self.ctx["limit"]["orderId"]
        expect(m in by and lim in by, f"allOrders lacks market {m} or limit {lim}: ids {list(by)}")
        expect(by[m]["status"] == "FILLED", f"market order status {by[m]['status']}")
        return f"{len(r)} orders; market={by[m]['status']} limit={by[lim]['status']}"

    def step_cancel_order(self):
        lim = self.ctx["limit"]
        r = self.client.futures_cancel_order(symbol=self.symbol, orderId=lim["orderId"])
        expect(r.get("orderId") == lim["orderId"], f"unexpected reply {r}")
        expect(r.get("status") == "CANCELED", f"status {r.get('status')!r}, expected CANCELED")
        o = self.client.futures_get_order(symbol=self.symbol, orderId=lim["orderId"])
        expect(o.get("status") == "CANCELED", f"query after cancel: status {o.get('status')!r}")
        ids = [x.get("orderId") for x in self.client.futures_get_open_orders(symbol=self.symbol)]
        expect(lim["orderId"] not in ids, f"canceled order still in openOrders {ids}")
        return f"orderId={r['orderId']} status={r['status']}"

    def step_limit_result(self):
        # newOrderRespType=RESULT on a LIMIT that rests: Binance answers at once with status NEW.
        # (ccxt sends RESULT by default; its request timeout, like python-binance's, is 10 s.)
        s = self.spec()
        price = floor_to(self.mark() * max(s["mult_down"] + Decimal("0.01"), Decimal("0.90")), s["tick"])
        t0 = time.time()
        r = self.client.futures_create_order(
            symbol=self.symbol, side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.002",
            price=fmt(price), newOrderRespType="RESULT",
        )
        dt = time.time() - t0
        self.client.futures_cancel_order(symbol=self.symbol, orderId=r["orderId"])
        expect(r.get("status") == "NEW", f"status {r.get('status')!r}")
        expect(dt < 2.0, f"RESULT reply for a resting LIMIT took {dt:.2f} s (Binance answers immediately with NEW)")
        return f"status NEW in {dt:.2f} s"

    def step_account_trades(self):
        r = self.client.futures_account_trades(symbol=self.symbol)
        expect(isinstance(r, list), f"userTrades should be a list: {r!r}")
        oid = self.ctx["market_order"]["orderId"]
        mine = [t for t in r if t.get("orderId") == oid]
        expect(mine, f"no trade for market order {oid}; trades: {r[:3]}")
        for k in ("id", "price", "qty", "quoteQty", "commission", "commissionAsset", "side", "buyer", "maker", "realizedPnl", "time", "positionSide"):
            expect(k in mine[0], f"trade lacks '{k}': {mine[0]}")
        q = sum(dec(t["qty"]) for t in mine)
        expect(q == dec("0.002"), f"trade qty sum {q} != 0.002")
        expect(mine[0]["side"] == "BUY" and mine[0]["buyer"] is True, f"side/buyer: {mine[0]}")
        return f"{len(mine)} trade(s) for order {oid}, qty {q}, price {mine[0]['price']}"

    def step_positions(self):
        rows = self.client.futures_position_information(symbol=self.symbol)
        expect(isinstance(rows, list) and rows, f"positionRisk should be a non-empty list: {rows!r}")
        p = [r for r in rows if r.get("symbol") == self.symbol]
        expect(p, f"no row for {self.symbol}: {rows}")
        p = p[0]
        for k in ("positionAmt", "entryPrice", "markPrice", "unRealizedProfit", "liquidationPrice", "positionSide", "notional", "updateTime"):
            expect(k in p, f"positionRisk row lacks '{k}': {p}")
        expect(dec(p["positionAmt"]) == dec("0.002"), f"positionAmt {p['positionAmt']}, expected 0.002")
        expect(dec(p["entryPrice"]) > 0, f"entryPrice {p['entryPrice']}")
        expect(p["positionSide"] == "BOTH", f"positionSide {p['positionSide']}")
        return f"positionAmt={p['positionAmt']} entryPrice={p['entryPrice']} markPrice={p['markPrice']}"

    def step_account(self):
        r = self.client.futures_account()  # GET /fapi/v2/account
        for k in ("totalWalletBalance", "availableBalance", "assets", "positions"):
            expect(k in r, f"account lacks '{k}': keys {list(r)}")
        usdt = [a for a in r["assets"] if a.get("asset") == "USDT"]
        expect(usdt and dec(usdt[0]["walletBalance"]) > 0, f"USDT asset missing or zero: {r['assets']}")
        pos = [p for p in r["positions"] if p.get("symbol") == self.symbol]
        expect(pos, f"positions lack {self.symbol}")
        expect(dec(pos[0]["positionAmt"]) == dec("0.002"), f"account position {pos[0]}")
        if "leverage" in pos[0] and str(pos[0]["leverage"]) != "10":
            self.warn(f"account positions[{self.symbol}].leverage = {pos[0]['leverage']!r}, expected '10'")
        return f"totalWalletBalance={r['totalWalletBalance']} availableBalance={r['availableBalance']}"

    def step_balance(self):
        r = self.client.futures_account_balance()  # GET /fapi/v3/balance
        expect(isinstance(r, list), f"balance should be a list: {r!r}")
        usdt = [b for b in r if b.get("asset") == "USDT"]
        expect(usdt, f"no USDT row: {r}")
        for k in ("accountAlias", "balance", "crossWalletBalance", "availableBalance", "maxWithdrawAmount", "updateTime"):
            expect(k in usdt[0], f"balance row lacks '{k}': {usdt[0]}")
        expect(dec(usdt[0]["balance"]) > 0, f"USDT balance {usdt[0]['balance']}")
        return f"USDT balance={usdt[0]['balance']} available={usdt[0]['availableBalance']}"

    # ---------------------------------------------------------------- algo (conditional) orders
    def step_stop_market_create(self):
        s = self.spec()
        trigger = floor_to(self.mark() * Decimal("0.97"), s["tick"])
        # python-binance 1.0.36 routes STOP_MARKET to POST /fapi/v1/algoOrder (stopPrice -> triggerPrice).
        r = self.client.futures_create_order(
            symbol=self.symbol, side="SELL", type="STOP_MARKET", stopPrice=fmt(trigger), closePosition=True,
        )
        for k in ("algoId", "clientAlgoId", "algoType", "orderType", "symbol", "side", "algoStatus", "triggerPrice"):
            expect(k in r, f"algoOrder reply lacks '{k}': {r}")
        expect(r["algoStatus"] == "NEW", f"algoStatus {r['algoStatus']!r}, expected NEW")
        expect(r["orderType"] == "STOP_MARKET" and r["algoType"] == "CONDITIONAL", f"types: {r}")
        expect(dec(r["triggerPrice"]) == trigger, f"triggerPrice {r['triggerPrice']} != {trigger}")
        self.ctx["algo"] = r
        return f"algoId={r['algoId']} clientAlgoId={r['clientAlgoId']} triggerPrice={r['triggerPrice']} closePosition={r.get('closePosition')}"

    def step_stop_market_query(self):
        a = self.ctx["algo"]
        lst = self.client.futures_get_open_orders(symbol=self.symbol, conditional=True)  # GET openAlgoOrders
        expect(isinstance(lst, list), f"openAlgoOrders should be a list: {lst!r}")
        expect(a["algoId"] in [x.get("algoId") for x in lst], f"algoId {a['algoId']} not in openAlgoOrders {lst}")
        o = self.client.futures_get_order(symbol=self.symbol, algoId=a["algoId"])  # GET algoOrder
        expect(o.get("algoId") == a["algoId"] and o.get("algoStatus") == "NEW", f"algoOrder query: {o}")
        return f"listed in openAlgoOrders ({len(lst)}); algoStatus={o['algoStatus']}"

    def step_stop_market_cancel(self):
        a = self.ctx["algo"]
        r = self.client.futures_cancel_order(symbol=self.symbol, algoId=a["algoId"])  # DELETE algoOrder
        expect(r.get("algoId") == a["algoId"], f"unexpected cancel reply {r}")
        o = self.client.futures_get_order(symbol=self.symbol, algoId=a["algoId"])
        expect(o.get("algoStatus") == "CANCELED", f"algoStatus after cancel {o.get('algoStatus')!r}: {o}")
        lst = self.client.futures_get_open_orders(symbol=self.symbol, conditional=True)
        expect(a["algoId"] not in [x.get("algoId") for x in lst], f"canceled algo order still open: {lst}")
        return f"cancel reply {r}; algoStatus={o['algoStatus']}"

    # ---------------------------------------------------------------- user data stream
    def step_listen_key(self):
        k = self.client.futures_stream_get_listen_key()  # POST /fapi/v1/listenKey, no body
        expect(isinstance(k, str) and k, f"listenKey {k!r}")
        self.ctx["listen_key"] = k
        return f"listenKey={k[:16]}..."

    def step_keepalive(self):
        r = self.client.futures_stream_keepalive(self.ctx["listen_key"])  # PUT /fapi/v1/listenKey
        expect(isinstance(r, dict), f"keepalive reply {r!r}")
        return f"{r}"

    def step_user_stream(self):
        return asyncio.run(self._user_stream())

    async def _user_stream(self):
        ac = self.async_client()
        bsm = BinanceSocketManager(ac)
        self.configure_bsm(bsm)
        sock = bsm.futures_user_socket()
        events = []
        try:
            try:
                await sock.__aenter__()
            except Exception as e:  # noqa: BLE001
                raise CheckFailed(
                    f"futures_user_socket could not connect to {sock._url}{sock._prefix}{sock._path}: "
                    f"{type(e).__name__}: {e}"
                ) from e
            url = f"{sock._url}{sock._prefix}{sock._path}"
            try:
                await asyncio.sleep(0.3)
                order = await ac.futures_create_order(symbol=self.symbol, side="BUY", type="MARKET", quantity="0.002")
                coid = order["clientOrderId"]
                statuses = []
                deadline = time.time() + 15
                filled = None
                while time.time() < deadline and filled is None:
                    try:
                        msg = await asyncio.wait_for(sock.recv(), timeout=max(0.1, deadline - time.time()))
                    except asyncio.TimeoutError:
                        break
                    events.append(msg)
                    if isinstance(msg, dict) and msg.get("e") == "error":
                        raise CheckFailed(f"socket error from python-binance reader on {url}: {msg}")
                    if isinstance(msg, dict) and msg.get("e") == "ORDER_TRADE_UPDATE" and msg.get("o", {}).get("c") == coid:
                        o = msg["o"]
                        lack = [f for f in OTU_CORE_FIELDS if f not in o]
                        expect(not lack, f"ORDER_TRADE_UPDATE.o lacks {lack}: {msg}")
                        for k in ("E", "T"):
                            expect(k in msg, f"ORDER_TRADE_UPDATE lacks '{k}': {msg}")
                        more = [f for f in OTU_MORE_FIELDS if f not in o]
                        if more:
                            self.warn(f"ORDER_TRADE_UPDATE.o lacks (less used) {more}")
                        statuses.append(f"{o['x']}/{o['X']}")
                        if o["X"] == "FILLED":
                            filled = msg
                # Keep listening briefly for the ACCOUNT_UPDATE that accompanies a fill.
                drain_until = time.time() + 1.5
                while filled is not None and time.time() < drain_until:
                    try:
                        events.append(await asyncio.wait_for(sock.recv(), timeout=max(0.1, drain_until - time.time())))
                    except asyncio.TimeoutError:
                        break
                kinds = sorted({m.get("e") for m in events if isinstance(m, dict)})
                expect(statuses, f"no ORDER_TRADE_UPDATE for {coid} within 15 s on {url}; events received: {events[:5]}")
                expect(filled is not None, f"ORDER_TRADE_UPDATE seen ({statuses}) but none with X=FILLED within 15 s")
                if "ACCOUNT_UPDATE" not in kinds:
                    self.warn("no ACCOUNT_UPDATE event seen while the order filled")
                self.ctx["ws_order"] = order
                return (f"connected {url}; ORDER_TRADE_UPDATE x/X sequence {statuses}; ap={filled['o']['ap']}; "
                        f"event types seen {kinds}")
            finally:
                await sock.__aexit__(None, None, None)
        finally:
            await ac.close_connection()

    def step_close_position(self):
        amt = self.position_amt()
        expect(amt > 0, f"expected a long position before closing, positionAmt={amt}")
        r = self.client.futures_create_order(
            symbol=self.symbol, side="SELL", type="MARKET", quantity=fmt(amt), reduceOnly="true",
        )
        o, seen = self.wait_order(r["orderId"])
        after = self.position_amt()
        expect(after == 0, f"positionAmt after reduceOnly close = {after}")
        return f"sold {fmt(amt)} reduceOnly; statuses {seen}; avgPrice={o['avgPrice']}; positionAmt now {after}"

    # ---------------------------------------------------------------- modify, batches, hedge mode
    def _resting_bid(self, qty_factor=Decimal("1.2")):
        """Price and quantity of a LIMIT bid that rests well under the mark (inside PERCENT_PRICE)."""
        s = self.spec()
        price = floor_to(self.mark() * max(s["mult_down"] + Decimal("0.01"), Decimal("0.90")), s["tick"])
        qty = max(s["min_qty"], ceil_to(s["min_notional"] * qty_factor / price, s["step"]), dec("0.002"))
        return price, qty

    def step_modify_order(self):
        s = self.spec()
        price, qty = self._resting_bid()
        r = self.client.futures_create_order(
            symbol=self.symbol, side="BUY", type="LIMIT", timeInForce="GTC", quantity=fmt(qty), price=fmt(price),
        )
        lower = price - s["tick"] * 10
        bigger = qty + s["step"]
        m = self.client.futures_modify_order(
            symbol=self.symbol, orderId=r["orderId"], side="BUY", quantity=fmt(bigger), price=fmt(lower),
        )
        expect(m.get("orderId") == r["orderId"], f"modify kept the order id? {m}")
        expect(dec(m["price"]) == lower and dec(m["origQty"]) == bigger, f"modify reply figures: {m}")
        o = self.client.futures_get_order(symbol=self.symbol, orderId=r["orderId"])
        expect(dec(o["price"]) == lower and o["status"] == "NEW", f"query after modify: {o}")
        try:
            self.client.futures_modify_order(
                symbol=self.symbol, orderId=r["orderId"], side="BUY", quantity=fmt(bigger), price=fmt(lower),
            )
            raise CheckFailed("an unchanged modification was accepted")
        except BinanceAPIException as e:
            expect(e.code == -5027, f"unchanged modification: code {e.code} {e.message!r}, expected -5027")
        self.client.futures_cancel_order(symbol=self.symbol, orderId=r["orderId"])
        return f"orderId={m['orderId']} price {fmt(price)} -> {m['price']}, qty {fmt(qty)} -> {m['origQty']}; unchanged -> -5027"

    def step_test_order(self):
        price, qty = self._resting_bid()
        before = len(self.client.futures_get_open_orders(symbol=self.symbol))
        r = self.client.futures_create_test_order(
            symbol=self.symbol, side="BUY", type="LIMIT", timeInForce="GTC", quantity=fmt(qty), price=fmt(price),
        )
        expect(isinstance(r, dict), f"test order reply: {r!r}")
        after = len(self.client.futures_get_open_orders(symbol=self.symbol))
        expect(after == before, f"a test order left an open order ({before} -> {after})")
        return f"validated, nothing placed (reply status {r.get('status')!r})"

    def step_batch_orders(self):
        price, qty = self._resting_bid()
        tick = self.spec()["tick"]
        orders = [
            {"symbol": self.symbol, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
             "quantity": fmt(qty), "price": fmt(price - tick * n)}
            for n in (0, 1)
        ]
        # Reduce-only with no position to reduce: refused on its own, the others go through.
        orders.append({"symbol": self.symbol, "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
                       "quantity": fmt(qty), "price": fmt(floor_to(self.mark() * Decimal("1.05"), tick)),
                       "reduceOnly": "true"})
        placed = self.client.futures_place_batch_order(batchOrders=orders)
        expect(isinstance(placed, list) and len(placed) == 3, f"batch reply: {placed!r}")
        expect(all(p.get("status") == "NEW" for p in placed[:2]), f"first two not NEW: {placed}")
        expect(placed[2].get("code") == -2022, f"reduce-only element: {placed[2]}")
        ids = [p["orderId"] for p in placed[:2]]
        # python-binance's spelling: the lower-case key, which it JSON-encodes before signing
        # (`orderIdList=[...]` is signed unencoded and sent encoded, which Binance refuses -1022).
        cancelled = self.client.futures_cancel_orders(symbol=self.symbol, orderidlist=ids)
        expect([c.get("status") for c in cancelled] == ["CANCELED", "CANCELED"], f"batch cancel: {cancelled}")
        return f"placed {ids} (third refused -2022), cancelled both in one request"

    def step_hedge_mode(self):
        if self.position_amt() != 0 or self.client.futures_get_open_orders(symbol=self.symbol):
            raise Skip("the account is not flat; the position mode cannot change")
        self.client.futures_change_position_mode(dualSidePosition="true")
        try:
            expect(self.client.futures_get_position_mode()["dualSidePosition"] is True, "mode did not change")
            try:
                self.client.futures_create_order(symbol=self.symbol, side="BUY", type="MARKET", quantity="0.002")
                raise CheckFailed("an order without positionSide was accepted in hedge mode")
            except BinanceAPIException as e:
                expect(e.code == -4061, f"no positionSide in hedge mode: code {e.code}, expected -4061")
            long_ = self.client.futures_create_order(symbol=self.symbol, side="BUY", positionSide="LONG",
                                                     type="MARKET", quantity="0.002")
            short = self.client.futures_create_order(symbol=self.symbol, side="SELL", positionSide="SHORT",
                                                     type="MARKET", quantity="0.003")
            self.wait_order(long_["orderId"])
            self.wait_order(short["orderId"])
            rows = {r["positionSide"]: dec(r["positionAmt"])
                    for r in self.client.futures_position_information(symbol=self.symbol)}
            expect(rows.get("LONG") == dec("0.002") and rows.get("SHORT") == dec("-0.003"),
                   f"hedge positions: {rows}")
            for side, ps, q in (("SELL", "LONG", "0.002"), ("BUY", "SHORT", "0.003")):
                c = self.client.futures_create_order(symbol=self.symbol, side=side, positionSide=ps,
                                                     type="MARKET", quantity=q)
                self.wait_order(c["orderId"])
            rows_after = {r["positionSide"]: dec(r["positionAmt"])
                          for r in self.client.futures_position_information(symbol=self.symbol)}
            expect(all(v == 0 for v in rows_after.values()), f"not flat after closing both sides: {rows_after}")
            return f"LONG and SHORT held apart {rows}; both closed; no positionSide -> -4061"
        finally:
            self.client.futures_change_position_mode(dualSidePosition="false")

    def step_stream_close(self):
        r = self.client.futures_stream_close(self.ctx["listen_key"])  # DELETE /fapi/v1/listenKey
        expect(isinstance(r, dict), f"close reply {r!r}")
        return f"{r}"

    # ---------------------------------------------------------------- extras: market streams
    def _market_stream(self, make_socket, check):
        async def go():
            ac = self.async_client()
            bsm = BinanceSocketManager(ac)
            self.configure_bsm(bsm)
            sock = make_socket(bsm)
            url = f"{sock._url}{sock._prefix}{sock._path}"
            try:
                try:
                    await sock.__aenter__()
                except Exception as e:  # noqa: BLE001
                    raise CheckFailed(f"could not connect to {url}: {type(e).__name__}: {e}") from e
                try:
                    msg = await asyncio.wait_for(sock.recv(), timeout=8)
                except asyncio.TimeoutError:
                    raise CheckFailed(f"no message within 8 s on {url}")
                finally:
                    await sock.__aexit__(None, None, None)
                if isinstance(msg, dict) and msg.get("e") == "error":
                    raise CheckFailed(f"socket error on {url}: {msg}")
                check(msg)
                return f"{url}: {str(msg)[:200]}"
            finally:
                await ac.close_connection()
        return asyncio.run(go())

    def step_futures_depth_cache(self):
        # python-binance's FuturesDepthCacheManager: <symbol>@depth10 on the combined public stream,
        # each event replacing the cached levels. Two updates (the book moves with the price).
        async def go():
            ac = self.async_client()
            bsm = BinanceSocketManager(ac)
            self.configure_bsm(bsm)
            seen = []
            try:
                async with FuturesDepthCacheManager(ac, self.symbol, bm=bsm, conv_type=Decimal) as dcm:
                    for _ in range(2):
                        dc = await asyncio.wait_for(dcm.recv(), timeout=10)
                        expect(not (isinstance(dc, dict) and dc.get("e") == "error"), f"depth cache error: {dc}")
                        bids, asks = dc.get_bids(), dc.get_asks()
                        expect(len(bids) == 10 and len(asks) == 10, f"{len(bids)} bids, {len(asks)} asks")
                        expect(bids == sorted(bids, reverse=True) and asks == sorted(asks), "levels out of order")
                        expect(bids[0][0] < asks[0][0], f"crossed book {bids[0]} / {asks[0]}")
                        seen.append((dc.update_time, bids[0][0], asks[0][0]))
            finally:
                await ac.close_connection()
            return f"updates (E, best bid, best ask): {seen}"
        return asyncio.run(go())

    def step_ws_mark_price(self):
        # python-binance: <FSTREAM_URL>market/stream?streams=btcusdt@markPrice@1s (combined payload)
        def check(m):
            expect(isinstance(m, dict) and "stream" in m and "data" in m, f"expected combined {{stream,data}}: {m}")
            expect(m["data"].get("e") == "markPriceUpdate", f"data.e: {m}")
        return self._market_stream(lambda b: b.symbol_mark_price_socket(self.symbol), check)

    def step_ws_depth(self):
        # python-binance: <FSTREAM_URL>public/stream?streams=btcusdt@depth5
        def check(m):
            expect(isinstance(m, dict) and "data" in m, f"expected combined {{stream,data}}: {m}")
            d = m["data"]
            expect("b" in d and "a" in d, f"depth payload lacks b/a: {m}")
        return self._market_stream(lambda b: b.futures_depth_socket(self.symbol, depth="5"), check)

    def step_ws_book_ticker(self):
        # python-binance: <FSTREAM_URL>public/stream?streams=btcusdt@bookTicker
        def check(m):
            expect(isinstance(m, dict) and "data" in m, f"expected combined {{stream,data}}: {m}")
            expect(m["data"].get("e") == "bookTicker" or "b" in m["data"], f"bookTicker payload: {m}")
        return self._market_stream(lambda b: b.symbol_ticker_futures_socket(self.symbol), check)

    def step_ws_multiplex(self):
        # python-binance: <FSTREAM_URL>market/stream?streams=a/b
        s = self.symbol.lower()
        def check(m):
            expect(isinstance(m, dict) and "stream" in m and "data" in m, f"expected combined {{stream,data}}: {m}")
        return self._market_stream(
            lambda b: b.futures_multiplex_socket([f"{s}@markPrice", "ethusdt@markPrice"]), check)

    # ---------------------------------------------------------------- extra: threaded manager
    def step_threaded_user_socket(self):
        # ThreadedWebsocketManager builds its own AsyncClient via AsyncClient.create(), which first
        # calls the *spot* GET /api/v3/ping and GET /api/v3/time. Only class attributes can point it.
        AsyncClient.API_URL = self.http + "/api"
        AsyncClient.FUTURES_URL = self.http + "/fapi"
        AsyncClient.FUTURES_DATA_URL = self.http + "/futures/data"
        BinanceSocketManager.FSTREAM_URL = self.ws
        BinanceSocketManager.STREAM_URL = self.ws
        q: queue.Queue = queue.Queue()
        # Default loop on purpose: python-binance creates the socket objects in the calling thread with
        # get_loop() and schedules their read loop there, so the manager must run that same loop.
        twm = ThreadedWebsocketManager(self.args.api_key, self.args.api_secret)
        twm.daemon = True
        twm.start()
        try:
            try:
                twm.start_futures_user_socket(callback=q.put)
            except RuntimeError as e:
                raise CheckFailed(
                    f"ThreadedWebsocketManager did not start: {e}. It calls AsyncClient.create(), which needs "
                    f"GET {self.http}/api/v3/ping and GET {self.http}/api/v3/time (spot paths) to answer"
                ) from e
            time.sleep(1.0)
            r = self.client.futures_create_order(symbol=self.symbol, side="BUY", type="MARKET", quantity="0.002")
            coid = r["clientOrderId"]
            deadline = time.time() + 15
            seen = []
            while time.time() < deadline:
                try:
                    m = q.get(timeout=max(0.1, deadline - time.time()))
                except queue.Empty:
                    break
                seen.append(m.get("e") if isinstance(m, dict) else type(m).__name__)
                if isinstance(m, dict) and m.get("e") == "error":
                    raise CheckFailed(f"socket error: {m}")
                if isinstance(m, dict) and m.get("e") == "ORDER_TRADE_UPDATE" and m["o"].get("c") == coid and m["o"].get("X") == "FILLED":
                    # undo the extra buy so later state is as before
                    self.client.futures_create_order(symbol=self.symbol, side="SELL", type="MARKET",
                                                     quantity="0.002", reduceOnly="true")
                    return f"ORDER_TRADE_UPDATE FILLED received via start_futures_user_socket; events {seen}"
            raise CheckFailed(f"no FILLED ORDER_TRADE_UPDATE for {coid} within 15 s; events {seen}")
        finally:
            twm.stop()
            twm.join(timeout=5)

    # ---------------------------------------------------------------- WebSocket API (/ws-fapi/v1)
    def limit_params(self, coid_prefix):
        """A GTC LIMIT bid that rests: under the mark, inside PERCENT_PRICE, above min notional."""
        s = self.spec()
        price = floor_to(self.mark() * max(s["mult_down"] + Decimal("0.01"), Decimal("0.90")), s["tick"])
        qty = max(s["min_qty"], ceil_to(s["min_notional"] * Decimal("1.2") / price, s["step"]), dec("0.002"))
        coid = f"{coid_prefix}-{int(time.time() * 1000)}"
        return dict(symbol=self.symbol, side="BUY", type="LIMIT", timeInForce="GTC",
                    quantity=fmt(qty), price=fmt(price), newClientOrderId=coid), coid

    async def _ws_api_place_query_cancel(self, ac, coid_prefix):
        """order.place, order.status, order.cancel through python-binance's ws_futures_* calls."""
        self.configure_ws_api(ac)
        params, coid = self.limit_params(coid_prefix)
        try:
            placed = await ac.ws_futures_create_order(**params)
            expect(placed.get("clientOrderId") == coid, f"order.place result {placed}")
            expect(placed.get("status") == "NEW", f"order.place status {placed.get('status')!r}: {placed}")
            oid = placed["orderId"]
            got = await ac.ws_futures_get_order(symbol=self.symbol, orderId=oid)
            expect(got.get("orderId") == oid and got.get("status") == "NEW", f"order.status result {got}")
            cancelled = await ac.ws_futures_cancel_order(symbol=self.symbol, orderId=oid)
            expect(cancelled.get("status") == "CANCELED", f"order.cancel result {cancelled}")
        finally:
            await ac.ws_future.close()
            await ac.close_connection()
        # And REST sees the same order, cancelled.
        o = self.client.futures_get_order(symbol=self.symbol, origClientOrderId=coid)
        expect(o.get("status") == "CANCELED", f"REST query after order.cancel: {o}")
        return f"ws {self.ws}ws-fapi/v1: orderId={oid} NEW -> order.status NEW -> order.cancel CANCELED (REST agrees)"

    def step_ws_api_order(self):
        return asyncio.run(self._ws_api_place_query_cancel(self.async_client(), "qpc-wsapi"))

    def step_ws_api_account(self):
        async def run():
            ac = self.async_client()
            self.configure_ws_api(ac)
            try:
                balances = await ac.ws_futures_account_balance()
                positions = await ac.ws_futures_v2_account_position(symbol=self.symbol)
                status = await ac.ws_futures_v2_account_status()
            finally:
                await ac.ws_future.close()
                await ac.close_connection()
            expect(isinstance(balances, list) and any(b.get("asset") == "USDT" for b in balances),
                   f"account.balance result {balances}")
            expect(isinstance(positions, list), f"v2/account.position result {positions}")
            expect("totalWalletBalance" in status and "assets" in status, f"v2/account.status result {status}")
            return f"USDT balance {[b['balance'] for b in balances if b.get('asset') == 'USDT']}; {len(positions)} position rows"
        return asyncio.run(run())

    def ed25519_key(self):
        # A Path: python-binance reads the file, and tells RSA from Ed25519 by the text's length.
        return Path(self.args.ed25519_private_key)

    def step_ed25519_rest(self):
        client = Client(self.args.ed25519_api_key, private_key=self.ed25519_key(), ping=False,
                        verbose=self.args.verbose)
        self.configure(client)
        balances = client.futures_account_balance()  # GET /fapi/v3/balance, Ed25519-signed
        expect(any(b.get("asset") == "USDT" for b in balances), f"balance reply {balances}")
        coid = f"qpc-ed25519-rest-{int(time.time() * 1000)}"
        params, _ = self.limit_params("unused")
        params["newClientOrderId"] = coid
        placed = client.futures_create_order(**params)  # POST /fapi/v1/order, Ed25519-signed body
        cancelled = client.futures_cancel_order(symbol=self.symbol, orderId=placed["orderId"])
        expect(cancelled.get("status") == "CANCELED", f"cancel reply {cancelled}")
        return f"balance and order {placed['orderId']} NEW -> CANCELED with Ed25519 signatures"

    def step_ed25519_ws_api(self):
        ac = AsyncClient(self.args.ed25519_api_key, private_key=self.ed25519_key(), verbose=self.args.verbose)
        self.configure(ac)
        return asyncio.run(self._ws_api_place_query_cancel(ac, "qpc-ed25519-ws"))

    # ---------------------------------------------------------------- main
    def main(self) -> int:
        print(f"python-binance {binance.__version__} against {self.http} (ws {self.ws}), symbol {self.symbol}", flush=True)
        R = self.run
        R("futures_ping", self.step_ping)
        R("futures_time", self.step_time)
        R("futures_exchange_info", self.step_exchange_info)
        R("futures_mark_price", self.step_mark_price)
        R("futures_symbol_ticker", self.step_symbol_ticker)
        R("futures_orderbook_ticker", self.step_book_ticker)
        R("futures_order_book", self.step_order_book)
        R("futures_ticker", self.step_ticker_24h, extra=True)
        R("futures_klines", self.step_klines, extra=True)
        R("futures_change_leverage", self.step_leverage)
        R("futures_change_margin_type", self.step_margin_type)
        R("futures_get_position_mode", self.step_position_mode)
        R("market_buy", self.step_market_buy, needs=["futures_exchange_info"])
        R("market_buy_filled", self.step_market_filled, needs=["market_buy"])
        R("limit_buy", self.step_limit_buy, needs=["futures_exchange_info"])
        R("futures_get_open_orders", self.step_open_orders, needs=["limit_buy"])
        R("futures_get_order_by_client_id", self.step_get_order_by_coid, needs=["limit_buy"])
        R("futures_get_all_orders", self.step_all_orders, needs=["limit_buy", "market_buy"])
        R("futures_cancel_order", self.step_cancel_order, needs=["limit_buy"])
        R("limit_buy_result_resp_type", self.step_limit_result, needs=["futures_exchange_info"], extra=True)
        R("futures_account_trades", self.step_account_trades, needs=["market_buy_filled"])
        R("futures_position_information", self.step_positions, needs=["market_buy_filled"])
        R("futures_account", self.step_account, needs=["market_buy_filled"])
        R("futures_account_balance", self.step_balance)
        R("stop_market_close_position_create", self.step_stop_market_create, needs=["futures_exchange_info"])
        R("stop_market_query", self.step_stop_market_query, needs=["stop_market_close_position_create"])
        R("stop_market_cancel", self.step_stop_market_cancel, needs=["stop_market_close_position_create"])
        R("futures_stream_get_listen_key", self.step_listen_key)
        R("futures_stream_keepalive", self.step_keepalive, needs=["futures_stream_get_listen_key"])
        R("user_data_stream_order_update", self.step_user_stream)
        R("reduce_only_close", self.step_close_position, needs=["futures_exchange_info"])
        R("futures_stream_close", self.step_stream_close, needs=["futures_stream_get_listen_key"])
        R("futures_modify_order", self.step_modify_order, needs=["futures_exchange_info"])
        R("futures_create_test_order", self.step_test_order, needs=["futures_exchange_info"])
        R("futures_place_batch_order", self.step_batch_orders, needs=["futures_exchange_info"])
        R("hedge_mode", self.step_hedge_mode, needs=["reduce_only_close"])
        R("ws_api_order_place_status_cancel", self.step_ws_api_order, needs=["futures_exchange_info"])
        R("ws_api_account", self.step_ws_api_account)
        if self.args.ed25519_private_key:
            R("ed25519_rest_balance_and_order", self.step_ed25519_rest, needs=["futures_exchange_info"])
            R("ed25519_ws_api_order", self.step_ed25519_ws_api, needs=["futures_exchange_info"])
        else:
            print("    (no --ed25519-private-key: the Ed25519 steps are not run)", flush=True)
        R("ws_mark_price_stream", self.step_ws_mark_price, extra=True)
        R("ws_depth_stream", self.step_ws_depth, extra=True)
        R("futures_depth_cache", self.step_futures_depth_cache)
        R("ws_book_ticker_stream", self.step_ws_book_ticker, extra=True)
        R("ws_multiplex_stream", self.step_ws_multiplex, extra=True)
        if not self.args.skip_threaded:
            R("threaded_manager_user_socket", self.step_threaded_user_socket, extra=True)

        # Best-effort cleanup (not a step): nothing left open on the simulator.
        try:
            self.client.futures_cancel_all_open_orders(symbol=self.symbol)
        except Exception as e:  # noqa: BLE001
            print(f"    (cleanup: cancel all open orders failed: {e})")

        core = [r for r in self.results if not r[2]]
        extra = [r for r in self.results if r[2]]
        def count(rows, st):
            return sum(1 for r in rows if r[1] == st)
        print("\n==== summary ====")
        for name, st, is_extra, _ in self.results:
            print(f"  {st:4} {name}{' [extra]' if is_extra else ''}")
        print(f"extra steps: {count(extra, 'PASS')} passed, {count(extra, 'FAIL')} failed, {count(extra, 'SKIP')} skipped")
        print(f"python-binance: {count(core, 'PASS')} passed, {count(core, 'FAIL') + count(core, 'SKIP')} failed")
        bad = count(core, "FAIL") + count(core, "SKIP")
        if self.args.strict:
            bad += count(extra, "FAIL") + count(extra, "SKIP")
        return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http", default=os.environ.get("QUANTUM_SIM_URL", "http://127.0.0.1:8080"),
                   help="simulator base URL (REST served under <http>/fapi)")
    p.add_argument("--ws", default=None, help="websocket base, default ws://<same host:port>/")
    p.add_argument("--api-key", default=os.environ.get("QUANTUM_SIM_API_KEY", "quantum-sim-key"))
    p.add_argument("--api-secret", default=os.environ.get("QUANTUM_SIM_API_SECRET", "quantum-sim-secret"))
    p.add_argument("--ed25519-api-key", default=os.environ.get("QUANTUM_SIM_ED25519_API_KEY", "quantum-sim-ed25519-key"),
                   help="API key whose Ed25519 public key the simulator was started with")
    p.add_argument("--ed25519-private-key", default=None,
                   help="PEM file of that key's private half; without it the Ed25519 steps are not run")
    p.add_argument("--symbol", default="BTCUSDT")
    p.add_argument("--strict", action="store_true", help="extra steps count towards the exit code too")
    p.add_argument("--skip-threaded", action="store_true", help="skip the ThreadedWebsocketManager extra step")
    p.add_argument("--verbose", action="store_true", help="python-binance debug logging of every request")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return Check(args).main()


if __name__ == "__main__":
    sys.exit(main())
