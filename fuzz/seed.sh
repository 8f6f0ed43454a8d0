#!/usr/bin/env bash
# Seeds each target's corpus with valid documents (the Binance fixtures in testdata/binance/,
# intents and results of every shape, simulator requests), so libFuzzer starts from inputs
# that reach past the first check. Run from the workspace root: bash fuzz/seed.sh
set -euo pipefail
cd "$(dirname "$0")"
fixtures=../testdata/binance
mkdir -p corpus/intent corpus/result corpus/binance_rest corpus/binance_ws corpus/sim_params
for f in "$fixtures"/rest__*.json; do
  # binance_rest: the first byte picks the HTTP status (0 = 200).
  { printf '\x00'; cat "$f"; } > "corpus/binance_rest/$(basename "$f")"
done
cp "$fixtures"/ws__*.json corpus/binance_ws/
cat > corpus/intent/buy.json <<'J'
{"intent_id":"i-1","symbol":"BTCUSDT","action":"BUY","position_size_usd":100.5,"leverage":10,"take_profit_pct":2,"stop_loss_pct":1,"trailing_pct":0.5,"source":"fuzz","created_at":1769042400000,"expires_at":1769042460000}
J
cat > corpus/intent/sell.json <<'J'
{"intent_id":"i-2","symbol":"ETHUSDT","action":"sell","quantity":"0.25","take_profit_price":"3100.5","stop_loss_price":3500}
J
cat > corpus/intent/close.json <<'J'
{"intent_id":"c-1","symbol":"AXSUSDT","action":"CLOSE","quantity":3}
J
cat > corpus/result/filled.json <<'J'
{"intent_id":"i-1","symbol":"BTCUSDT","action":"BUY","status":"filled","order_id":5000000001,"client_order_id":"q-i-1","entry_price":95000.1,"executed_qty":0.002,"position_size_usd":190.0002,"leverage":10,"commission":0.076,"commission_asset":"USDT","reduce_only":false,"take_profit_pct":2,"stop_loss_pct":1,"trailing_pct":0.5,"confirmed_by":"user_stream","error_code":null,"error":null,"intent_at":1000,"order_sent_at":1500,"filled_at":2000,"published_at":3000}
J
cat > corpus/result/rejected.json <<'J'
{"intent_id":"","symbol":"","action":"","status":"rejected","error":"not JSON","entry_price":0,"executed_qty":0,"position_size_usd":0,"published_at":5}
J
cat > corpus/result/partial.json <<'J'
{"intent_id":"p-1","symbol":"ETHUSDT","action":"SELL","status":"partially_filled","entry_price":"3400.25","executed_qty":"0.5","confirmed_by":"rest_poll","stop_loss_price":3500,"published_at":9}
J
# sim_params: a leading '!' means "signed"; the first line is METHOD PATH?QUERY.
printf '!POST /fapi/v1/order?symbol=ETHUSDT&side=BUY&type=MARKET&quantity=0.1&newOrderRespType=RESULT\n' > corpus/sim_params/market
printf '!POST /fapi/v1/order?symbol=SOLUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=150\n' > corpus/sim_params/limit
printf '!POST /fapi/v1/algoOrder?algoType=CONDITIONAL&symbol=BTCUSDT&side=SELL&type=STOP_MARKET&triggerPrice=1000&closePosition=true\n' > corpus/sim_params/algo
printf 'GET /fapi/v1/depth?symbol=BTCUSDT&limit=1000\n' > corpus/sim_params/depth
printf 'POST /sim/v1/price\n{"symbol":"BTCUSDT","price":"95000"}' > corpus/sim_params/price
printf 'POST /sim/v1/faults\n{"clock_skew_ms":1000,"result_wait_ms":10,"book_level_notional":"50"}' > corpus/sim_params/faults
printf '!POST /fapi/v1/countdownCancelAll?symbol=BTCUSDT&countdownTime=1000\n' > corpus/sim_params/countdown
echo "seeded: $(find corpus -type f | wc -l) files"
