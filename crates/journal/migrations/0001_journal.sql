-- The trade journal, one portable set for SQLite and PostgreSQL: TEXT and BIGINT only.
-- Prices, quantities, fees and PnL are TEXT holding the exact decimal (never a float).
-- Times are BIGINT milliseconds since the epoch. Every row is keyed by what names it on the bus
-- (the stream entry id, or the lot for a lot's events), and rows are only ever inserted with
-- ON CONFLICT DO NOTHING, so reading a stream again changes nothing.

-- Every entry of quantum:stream:trade.intent.
CREATE TABLE intents (
    entry_id TEXT PRIMARY KEY,
    published_at BIGINT NOT NULL,
    intent_id TEXT,
    symbol TEXT,
    action TEXT,
    position_side TEXT,
    payload TEXT NOT NULL
);

-- Every execution result (quantum:stream:trade.execution.res): the order, what filled, fees.
CREATE TABLE results (
    entry_id TEXT PRIMARY KEY,
    published_at BIGINT NOT NULL,
    intent_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    action TEXT NOT NULL,
    position_side TEXT,
    status TEXT NOT NULL,
    order_id BIGINT,
    client_order_id TEXT,
    executed_qty TEXT NOT NULL,
    avg_price TEXT NOT NULL,
    commission TEXT,
    commission_asset TEXT NOT NULL,
    confirmed_by TEXT,
    error TEXT,
    payload TEXT NOT NULL
);
CREATE INDEX results_intent ON results (intent_id);

-- Lots the exit monitor opened or adopted (quantum:stream:position.events).
CREATE TABLE lots (
    lot_id TEXT PRIMARY KEY,
    entry_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    symbol TEXT NOT NULL,
    position_side TEXT NOT NULL,
    direction TEXT NOT NULL,
    qty TEXT NOT NULL,
    entry_price TEXT NOT NULL,
    opened_at BIGINT NOT NULL
);

-- Quantity that left the book: a lot closed or exited (exit_key = the lot), or a part of it
-- (kind 'reduced', exit_key = lot:at:qty). A lot's rows together are one trade of the reports.
CREATE TABLE exits (
    exit_key TEXT PRIMARY KEY,
    lot_id TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    symbol TEXT NOT NULL,
    position_side TEXT NOT NULL,
    direction TEXT NOT NULL,
    qty TEXT NOT NULL,
    entry_price TEXT NOT NULL,
    exit_price TEXT,
    reason TEXT NOT NULL,
    why TEXT,
    realized_pnl TEXT,
    fees TEXT,
    opened_at BIGINT NOT NULL,
    closed_at BIGINT NOT NULL
);
CREATE INDEX exits_closed_at ON exits (closed_at);
CREATE INDEX exits_lot ON exits (lot_id);

-- Exchange-side protective orders the exit monitor placed or cancelled
-- (quantum:stream:protection.events).
CREATE TABLE protective_orders (
    client_algo_id TEXT NOT NULL,
    action TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    symbol TEXT NOT NULL,
    position_side TEXT NOT NULL,
    algo_id BIGINT NOT NULL,
    trigger_price TEXT,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (client_algo_id, action)
);

-- Every change of the trading state (quantum:stream:control).
CREATE TABLE trading_state (
    entry_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    set_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);

-- Entries the journal could not read, kept with the reason (nothing is dropped silently).
CREATE TABLE unreadable (
    stream TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload TEXT,
    PRIMARY KEY (stream, entry_id)
);
