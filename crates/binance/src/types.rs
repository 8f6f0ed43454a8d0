//! REST wire types: the JSON bodies of the endpoints this client calls, field for field as
//! Binance documents them (pinned by the fixtures in `testdata/binance/`), and the request
//! structs the caller fills in. Prices, quantities, balances and fees are `Decimal`, parsed from
//! Binance's decimal strings. Fields that some endpoints omit (`cumQty`, `time`, `priceMatch`, ...)
//! are `Option`s or defaulted, because the order object's shape changes between endpoints.

// Unlike the enums below, the side keeps no unknown values: it is `model`'s `Side`, and a
// USDⓈ-M order is a BUY or a SELL (a third side would change what every order means, not add
// a variant to ignore).
use model::Side;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::wire::{dec, loose_id, loose_string, opt_dec, wire_enum};

wire_enum! {
    /// Position side: `Both` in one-way mode, `Long`/`Short` in hedge mode.
    PositionSide { Both = "BOTH", Long = "LONG", Short = "SHORT" }
}

impl PositionSide {
    /// `model`'s position side; `None` for a value this client does not know.
    pub fn to_model(&self) -> Option<model::PositionSide> {
        match self {
            PositionSide::Both => Some(model::PositionSide::Both),
            PositionSide::Long => Some(model::PositionSide::Long),
            PositionSide::Short => Some(model::PositionSide::Short),
            PositionSide::Other(_) => None,
        }
    }
}

impl From<model::PositionSide> for PositionSide {
    fn from(side: model::PositionSide) -> PositionSide {
        match side {
            model::PositionSide::Both => PositionSide::Both,
            model::PositionSide::Long => PositionSide::Long,
            model::PositionSide::Short => PositionSide::Short,
        }
    }
}

wire_enum! {
    /// Order type, as reported by Binance (including the conditional types of older orders and
    /// `LIQUIDATION` in stream events).
    OrderType {
        Limit = "LIMIT",
        Market = "MARKET",
        Stop = "STOP",
        StopMarket = "STOP_MARKET",
        TakeProfit = "TAKE_PROFIT",
        TakeProfitMarket = "TAKE_PROFIT_MARKET",
        TrailingStopMarket = "TRAILING_STOP_MARKET",
        Liquidation = "LIQUIDATION",
    }
}

wire_enum! {
    /// Order status (`status` in REST, `X` in streams).
    OrderStatus {
        New = "NEW",
        PartiallyFilled = "PARTIALLY_FILLED",
        Filled = "FILLED",
        Canceled = "CANCELED",
        Rejected = "REJECTED",
        Expired = "EXPIRED",
        ExpiredInMatch = "EXPIRED_IN_MATCH",
    }
}

impl OrderStatus {
    /// True when the order can change no more (its fills, if any, are final).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            OrderStatus::Filled
                | OrderStatus::Canceled
                | OrderStatus::Rejected
                | OrderStatus::Expired
                | OrderStatus::ExpiredInMatch
        )
    }
}

wire_enum! {
    /// Time in force.
    TimeInForce { Gtc = "GTC", Ioc = "IOC", Fok = "FOK", Gtx = "GTX", Gtd = "GTD", Rpi = "RPI" }
}

wire_enum! {
    /// Which price triggers a conditional order.
    WorkingType { MarkPrice = "MARK_PRICE", ContractPrice = "CONTRACT_PRICE" }
}

wire_enum! {
    /// Algo order status.
    AlgoStatus {
        New = "NEW",
        Canceled = "CANCELED",
        Triggering = "TRIGGERING",
        Triggered = "TRIGGERED",
        Finished = "FINISHED",
        Rejected = "REJECTED",
        Expired = "EXPIRED",
    }
}

wire_enum! {
    /// Conditional order types accepted by `POST /fapi/v1/algoOrder`.
    AlgoOrderType {
        StopMarket = "STOP_MARKET",
        TakeProfitMarket = "TAKE_PROFIT_MARKET",
        Stop = "STOP",
        TakeProfit = "TAKE_PROFIT",
        TrailingStopMarket = "TRAILING_STOP_MARKET",
    }
}

/// `GET /fapi/v1/time`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTime {
    /// Server time, ms since the epoch.
    pub server_time: i64,
}

/// `GET /fapi/v1/exchangeInfo` (the parts this client uses).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeInfo {
    /// Usually `UTC`.
    #[serde(default)]
    pub timezone: String,
    /// Server time when the reply was built (do not use for clock sync).
    #[serde(default)]
    pub server_time: i64,
    /// Request-weight and order-count limits.
    #[serde(default)]
    pub rate_limits: Vec<RateLimit>,
    /// Listed contracts.
    pub symbols: Vec<SymbolInfo>,
}

/// One entry of `rateLimits`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// `REQUEST_WEIGHT` or `ORDERS`.
    pub rate_limit_type: String,
    /// `SECOND`, `MINUTE` or `DAY`.
    pub interval: String,
    /// Number of intervals in the window.
    pub interval_num: u32,
    /// The limit.
    pub limit: u32,
}

/// One symbol of exchangeInfo.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SymbolInfo {
    /// e.g. `BTCUSDT`.
    pub symbol: String,
    /// `TRADING`, `SETTLING`, ...
    pub status: String,
    /// `PERPETUAL`, ...
    #[serde(default)]
    pub contract_type: String,
    /// Base asset.
    #[serde(default)]
    pub base_asset: String,
    /// Quote asset.
    #[serde(default)]
    pub quote_asset: String,
    /// Margin asset.
    #[serde(default)]
    pub margin_asset: String,
    /// Decimals allowed in a price (not the tick size).
    pub price_precision: u32,
    /// Decimals allowed in a quantity (not the step size).
    pub quantity_precision: u32,
    /// The filters.
    pub filters: Vec<SymbolFilter>,
}

/// One entry of a symbol's `filters`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "filterType")]
pub enum SymbolFilter {
    /// Price range and tick.
    #[serde(rename = "PRICE_FILTER", rename_all = "camelCase")]
    PriceFilter {
        /// Lowest price (0 disables).
        #[serde(with = "dec")]
        min_price: Decimal,
        /// Highest price (0 disables).
        #[serde(with = "dec")]
        max_price: Decimal,
        /// Price grid (0 disables).
        #[serde(with = "dec")]
        tick_size: Decimal,
    },
    /// Quantity range and step for LIMIT orders.
    #[serde(rename = "LOT_SIZE", rename_all = "camelCase")]
    LotSize {
        /// Smallest quantity.
        #[serde(with = "dec")]
        min_qty: Decimal,
        /// Largest quantity.
        #[serde(with = "dec")]
        max_qty: Decimal,
        /// Quantity grid.
        #[serde(with = "dec")]
        step_size: Decimal,
    },
    /// Quantity range and step for MARKET orders.
    #[serde(rename = "MARKET_LOT_SIZE", rename_all = "camelCase")]
    MarketLotSize {
        /// Smallest quantity.
        #[serde(with = "dec")]
        min_qty: Decimal,
        /// Largest quantity.
        #[serde(with = "dec")]
        max_qty: Decimal,
        /// Quantity grid.
        #[serde(with = "dec")]
        step_size: Decimal,
    },
    /// Minimum order notional (price × quantity) unless reduce-only.
    #[serde(rename = "MIN_NOTIONAL")]
    MinNotional {
        /// The minimum.
        #[serde(with = "dec")]
        notional: Decimal,
    },
    /// Limits of a LIMIT price relative to the mark price.
    #[serde(rename = "PERCENT_PRICE", rename_all = "camelCase")]
    PercentPrice {
        /// BUY price ≤ mark × multiplierUp.
        #[serde(with = "dec")]
        multiplier_up: Decimal,
        /// SELL price ≥ mark × multiplierDown.
        #[serde(with = "dec")]
        multiplier_down: Decimal,
    },
    /// Maximum open orders.
    #[serde(rename = "MAX_NUM_ORDERS")]
    MaxNumOrders {
        /// The limit.
        limit: u32,
    },
    /// A filter this client does not use.
    #[serde(other)]
    Other,
}

/// `GET /fapi/v1/premiumIndex?symbol=`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PremiumIndex {
    /// Symbol.
    pub symbol: String,
    /// Mark price.
    #[serde(with = "dec")]
    pub mark_price: Decimal,
    /// Index price.
    #[serde(with = "dec")]
    pub index_price: Decimal,
    /// Estimated settle price.
    #[serde(default, with = "opt_dec")]
    pub estimated_settle_price: Option<Decimal>,
    /// Last funding rate.
    #[serde(default, with = "opt_dec")]
    pub last_funding_rate: Option<Decimal>,
    /// Next funding time, ms.
    #[serde(default)]
    pub next_funding_time: i64,
    /// Time of the values, ms.
    pub time: i64,
}

/// `POST /fapi/v1/leverage`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeverageChange {
    /// New leverage.
    pub leverage: u32,
    /// Largest notional at this leverage.
    #[serde(with = "dec")]
    pub max_notional_value: Decimal,
    /// Symbol.
    pub symbol: String,
}

/// `GET /fapi/v1/positionSide/dual`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PositionMode {
    /// True in hedge mode, false in one-way mode.
    pub dual_side_position: bool,
}

/// An order as `POST`, `GET` and `DELETE /fapi/v1/order`, `openOrders` and `allOrders` return it.
///
/// After a `newOrderRespType=ACK` placement this is the state **at acceptance**: a MARKET order
/// shows `NEW` with zero `executed_qty` and `avg_price`, which says nothing about fills. Only a
/// final `status` (see [`OrderStatus::is_final`]) makes `executed_qty`/`avg_price` final.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// Exchange order id (can exceed 2^32).
    pub order_id: i64,
    /// Symbol.
    pub symbol: String,
    /// Status.
    pub status: OrderStatus,
    /// Our id for the order.
    pub client_order_id: String,
    /// Limit price (`0` for MARKET).
    #[serde(with = "dec")]
    pub price: Decimal,
    /// Average fill price so far (`0` when nothing filled).
    #[serde(with = "dec")]
    pub avg_price: Decimal,
    /// Ordered quantity.
    #[serde(with = "dec")]
    pub orig_qty: Decimal,
    /// Filled quantity so far.
    #[serde(with = "dec")]
    pub executed_qty: Decimal,
    /// Same as `executed_qty`; only in new-order and cancel replies.
    #[serde(default, with = "opt_dec")]
    pub cum_qty: Option<Decimal>,
    /// Filled quote notional so far.
    #[serde(with = "dec")]
    pub cum_quote: Decimal,
    /// Time in force.
    pub time_in_force: TimeInForce,
    /// Type.
    #[serde(rename = "type")]
    pub order_type: OrderType,
    /// Type at placement (differs for triggered orders).
    #[serde(default)]
    pub orig_type: Option<OrderType>,
    /// Reduce-only flag.
    pub reduce_only: bool,
    /// Close-position flag.
    #[serde(default)]
    pub close_position: bool,
    /// Side.
    pub side: Side,
    /// Position side.
    pub position_side: PositionSide,
    /// Stop price (`0` for plain orders).
    #[serde(default, with = "opt_dec")]
    pub stop_price: Option<Decimal>,
    /// Working type.
    #[serde(default)]
    pub working_type: Option<WorkingType>,
    /// Creation time, ms; only in query and list replies.
    #[serde(default)]
    pub time: Option<i64>,
    /// Last update, ms.
    pub update_time: i64,
}

/// `GET /fapi/v1/userTrades` item.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserTrade {
    /// Trade id (the user stream's `t`).
    pub id: i64,
    /// Order id.
    pub order_id: i64,
    /// Symbol.
    pub symbol: String,
    /// Side.
    pub side: Side,
    /// Position side.
    pub position_side: PositionSide,
    /// Fill price.
    #[serde(with = "dec")]
    pub price: Decimal,
    /// Fill quantity.
    #[serde(with = "dec")]
    pub qty: Decimal,
    /// Fill quote notional.
    #[serde(with = "dec")]
    pub quote_qty: Decimal,
    /// Fee.
    #[serde(with = "dec")]
    pub commission: Decimal,
    /// Fee asset.
    pub commission_asset: String,
    /// Realized PnL of this fill.
    #[serde(with = "dec")]
    pub realized_pnl: Decimal,
    /// Buyer side of the trade.
    pub buyer: bool,
    /// Maker side of the trade.
    pub maker: bool,
    /// Trade time, ms.
    pub time: i64,
}

/// `GET /fapi/v3/positionRisk` item (symbols with a position or open orders).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PositionRisk {
    /// Symbol.
    pub symbol: String,
    /// Position side.
    pub position_side: PositionSide,
    /// Signed amount (negative is short).
    #[serde(with = "dec")]
    pub position_amt: Decimal,
    /// Average entry price.
    #[serde(with = "dec")]
    pub entry_price: Decimal,
    /// Break-even price.
    #[serde(default, with = "opt_dec")]
    pub break_even_price: Option<Decimal>,
    /// Mark price.
    #[serde(with = "dec")]
    pub mark_price: Decimal,
    /// Unrealized PnL.
    #[serde(with = "dec")]
    pub un_realized_profit: Decimal,
    /// Liquidation price (`0` when none).
    #[serde(with = "dec")]
    pub liquidation_price: Decimal,
    /// Notional at mark.
    #[serde(with = "dec")]
    pub notional: Decimal,
    /// Margin asset.
    #[serde(default)]
    pub margin_asset: String,
    /// Initial margin.
    #[serde(default, with = "opt_dec")]
    pub initial_margin: Option<Decimal>,
    /// Maintenance margin.
    #[serde(default, with = "opt_dec")]
    pub maint_margin: Option<Decimal>,
    /// Last update, ms.
    pub update_time: i64,
}

/// `GET /fapi/v2/account`: what `quantum doctor` needs of the account (the rest is ignored).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// Whether the key may trade. The documentation's single-asset example lacks the field
    /// (testdata/binance/SOURCES.md, quirk 6), so its absence is not read as "no".
    #[serde(default)]
    pub can_trade: Option<bool>,
    /// Total wallet balance, in the margin asset.
    #[serde(with = "dec")]
    pub total_wallet_balance: Decimal,
    /// Balance available for new positions.
    #[serde(with = "dec")]
    pub available_balance: Decimal,
    /// One row per symbol (and position side), with the symbol's leverage setting.
    #[serde(default)]
    pub positions: Vec<AccountPosition>,
}

/// A `positions[]` row of `GET /fapi/v2/account`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountPosition {
    /// Symbol.
    pub symbol: String,
    /// The symbol's leverage setting; a string on the wire (`"100"`).
    #[serde(with = "loose_u32")]
    pub leverage: u32,
    /// Signed position amount.
    #[serde(with = "dec")]
    pub position_amt: Decimal,
    /// Position side (`BOTH` in one-way mode).
    pub position_side: PositionSide,
}

/// A count that Binance sends as a string (`"100"`) in some replies and as a number in others.
mod loose_u32 {
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Loose {
            Number(u32),
            Text(String),
        }
        match Loose::deserialize(d)? {
            Loose::Number(n) => Ok(n),
            Loose::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `GET /fapi/v3/balance` item.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    /// Account alias.
    #[serde(default)]
    pub account_alias: String,
    /// Asset.
    pub asset: String,
    /// Wallet balance.
    #[serde(with = "dec")]
    pub balance: Decimal,
    /// Cross wallet balance.
    #[serde(with = "dec")]
    pub cross_wallet_balance: Decimal,
    /// Unrealized PnL of cross positions.
    #[serde(with = "dec")]
    pub cross_un_pnl: Decimal,
    /// Available for new orders.
    #[serde(with = "dec")]
    pub available_balance: Decimal,
    /// Withdrawable.
    #[serde(with = "dec")]
    pub max_withdraw_amount: Decimal,
    /// Usable as margin.
    #[serde(default)]
    pub margin_available: bool,
    /// Last update, ms.
    pub update_time: i64,
}

/// `POST`/`PUT /fapi/v1/listenKey`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenKey {
    /// The key.
    pub listen_key: String,
}

/// An algo (conditional) order as create, query and list return it. Create and query differ in
/// which fields they carry, so most are optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlgoOrder {
    /// Exchange algo id.
    pub algo_id: i64,
    /// Our id for the algo order.
    pub client_algo_id: String,
    /// `CONDITIONAL`.
    pub algo_type: String,
    /// Conditional type.
    pub order_type: AlgoOrderType,
    /// Symbol.
    pub symbol: String,
    /// Side.
    pub side: Side,
    /// Position side.
    pub position_side: PositionSide,
    /// Time in force.
    #[serde(default)]
    pub time_in_force: Option<TimeInForce>,
    /// Quantity (`0` with closePosition).
    #[serde(default, with = "opt_dec")]
    pub quantity: Option<Decimal>,
    /// Status.
    pub algo_status: AlgoStatus,
    /// Trigger price.
    #[serde(default, with = "opt_dec")]
    pub trigger_price: Option<Decimal>,
    /// Limit price for STOP/TAKE_PROFIT.
    #[serde(default, with = "opt_dec")]
    pub price: Option<Decimal>,
    /// Working type.
    #[serde(default)]
    pub working_type: Option<WorkingType>,
    /// Close-all flag.
    #[serde(default)]
    pub close_position: bool,
    /// Price protection.
    #[serde(default)]
    pub price_protect: bool,
    /// Reduce-only.
    #[serde(default)]
    pub reduce_only: bool,
    /// The order placed when it triggered (query replies only; `""` before that).
    #[serde(default, with = "loose_id")]
    pub actual_order_id: Option<i64>,
    /// Average price of the triggered order.
    #[serde(default, with = "opt_dec")]
    pub actual_price: Option<Decimal>,
    /// Trailing activation price.
    #[serde(default, with = "opt_dec")]
    pub activate_price: Option<Decimal>,
    /// Trailing callback rate.
    #[serde(default, with = "opt_dec")]
    pub callback_rate: Option<Decimal>,
    /// Creation time, ms.
    pub create_time: i64,
    /// Last update, ms.
    pub update_time: i64,
    /// Trigger time, ms (`0` before triggering).
    #[serde(default)]
    pub trigger_time: i64,
}

/// `DELETE /fapi/v1/algoOrder`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlgoCancel {
    /// Exchange algo id.
    pub algo_id: i64,
    /// Our id.
    pub client_algo_id: String,
    /// `"200"` on success (a string here, a number on similar endpoints).
    #[serde(with = "loose_string")]
    pub code: String,
    /// `success`.
    pub msg: String,
}

/// How to name an order in a lookup or cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderRef {
    /// The exchange's `orderId`.
    OrderId(i64),
    /// Our `clientOrderId` (sent as `origClientOrderId`).
    ClientOrderId(String),
}

/// How to name an algo order in a lookup or cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlgoRef {
    /// The exchange's `algoId`.
    AlgoId(i64),
    /// Our `clientAlgoId`.
    ClientAlgoId(String),
}

/// What the new-order reply should contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseType {
    /// The order as accepted (default). A MARKET order shows `NEW` with zeros.
    #[default]
    Ack,
    /// The final result for MARKET and IOC/FOK orders (waits for the fills).
    Result,
}

impl ResponseType {
    fn as_str(self) -> &'static str {
        match self {
            ResponseType::Ack => "ACK",
            ResponseType::Result => "RESULT",
        }
    }
}

/// MARKET or LIMIT, with what each needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewOrderKind {
    /// A MARKET order (quantity checked against MARKET_LOT_SIZE).
    Market,
    /// A LIMIT order.
    Limit {
        /// Limit price (on the tick grid).
        price: Decimal,
        /// Time in force.
        time_in_force: TimeInForce,
    },
}

/// A `POST /fapi/v1/order` request. `client_order_id` is mandatory here: it is what makes a lost
/// reply recoverable (look the order up by it) and a retry detectable (-4116).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Symbol.
    pub symbol: String,
    /// Side.
    pub side: Side,
    /// MARKET or LIMIT.
    pub kind: NewOrderKind,
    /// Quantity (on the step grid).
    pub quantity: Decimal,
    /// Our id: `^[.A-Z:/a-z0-9_-]{1,36}$`.
    pub client_order_id: String,
    /// Reduce-only (one-way mode only).
    pub reduce_only: bool,
    /// Position side; `None` sends nothing (one-way mode's `BOTH`).
    pub position_side: Option<PositionSide>,
    /// ACK (default) or RESULT.
    pub response_type: ResponseType,
}

impl NewOrder {
    /// A MARKET order with ACK reply, not reduce-only.
    pub fn market(
        symbol: impl Into<String>,
        side: Side,
        quantity: Decimal,
        client_order_id: impl Into<String>,
    ) -> NewOrder {
        NewOrder {
            symbol: symbol.into(),
            side,
            kind: NewOrderKind::Market,
            quantity,
            client_order_id: client_order_id.into(),
            reduce_only: false,
            position_side: None,
            response_type: ResponseType::Ack,
        }
    }

    /// A GTC LIMIT order with ACK reply, not reduce-only.
    pub fn limit(
        symbol: impl Into<String>,
        side: Side,
        quantity: Decimal,
        price: Decimal,
        client_order_id: impl Into<String>,
    ) -> NewOrder {
        NewOrder {
            kind: NewOrderKind::Limit {
                price,
                time_in_force: TimeInForce::Gtc,
            },
            ..NewOrder::market(symbol, side, quantity, client_order_id)
        }
    }

    /// Sets reduce-only.
    pub fn reduce_only(mut self, reduce_only: bool) -> NewOrder {
        self.reduce_only = reduce_only;
        self
    }

    /// Sets the reply type.
    pub fn response_type(mut self, response_type: ResponseType) -> NewOrder {
        self.response_type = response_type;
        self
    }

    pub(crate) fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = vec![
            ("symbol", self.symbol.clone()),
            ("side", self.side.to_string()),
        ];
        match &self.kind {
            NewOrderKind::Market => params.push(("type", "MARKET".into())),
            NewOrderKind::Limit {
                price,
                time_in_force,
            } => {
                params.push(("type", "LIMIT".into()));
                params.push(("timeInForce", time_in_force.to_string()));
                params.push(("price", price.normalize().to_string()));
            }
        }
        params.push(("quantity", self.quantity.normalize().to_string()));
        if let Some(side) = &self.position_side {
            params.push(("positionSide", side.to_string()));
        }
        if self.reduce_only {
            params.push(("reduceOnly", "true".into()));
        }
        params.push(("newClientOrderId", self.client_order_id.clone()));
        params.push(("newOrderRespType", self.response_type.as_str().into()));
        params
    }
}

/// A `POST /fapi/v1/algoOrder` request (`algoType=CONDITIONAL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlgoOrder {
    /// Symbol.
    pub symbol: String,
    /// Side.
    pub side: Side,
    /// Conditional type.
    pub order_type: AlgoOrderType,
    /// Quantity; `None` with `close_position`.
    pub quantity: Option<Decimal>,
    /// Limit price for STOP/TAKE_PROFIT.
    pub price: Option<Decimal>,
    /// Trigger price (not for trailing orders).
    pub trigger_price: Option<Decimal>,
    /// Close the whole position when triggered (no quantity, no reduce-only).
    pub close_position: bool,
    /// Reduce-only.
    pub reduce_only: bool,
    /// Which price triggers it; `None` is Binance's default, CONTRACT_PRICE.
    pub working_type: Option<WorkingType>,
    /// Price protection.
    pub price_protect: bool,
    /// Trailing activation price.
    pub activate_price: Option<Decimal>,
    /// Trailing callback rate in percent (0.1–10).
    pub callback_rate: Option<Decimal>,
    /// Position side.
    pub position_side: Option<PositionSide>,
    /// Time in force (STOP/TAKE_PROFIT).
    pub time_in_force: Option<TimeInForce>,
    /// Our id: `^[.A-Z:/a-z0-9_-]{1,36}$`.
    pub client_algo_id: String,
}

impl NewAlgoOrder {
    /// A close-position STOP_MARKET or TAKE_PROFIT_MARKET at `trigger_price`, the usual
    /// protective order.
    pub fn close_position(
        symbol: impl Into<String>,
        side: Side,
        order_type: AlgoOrderType,
        trigger_price: Decimal,
        client_algo_id: impl Into<String>,
    ) -> NewAlgoOrder {
        NewAlgoOrder {
            symbol: symbol.into(),
            side,
            order_type,
            quantity: None,
            price: None,
            trigger_price: Some(trigger_price),
            close_position: true,
            reduce_only: false,
            working_type: None,
            price_protect: false,
            activate_price: None,
            callback_rate: None,
            position_side: None,
            time_in_force: None,
            client_algo_id: client_algo_id.into(),
        }
    }

    pub(crate) fn params(&self) -> Vec<(&'static str, String)> {
        let mut params = vec![
            ("algoType", "CONDITIONAL".to_string()),
            ("symbol", self.symbol.clone()),
            ("side", self.side.to_string()),
            ("type", self.order_type.to_string()),
        ];
        let mut decimal = |name: &'static str, value: &Option<Decimal>| {
            if let Some(v) = value {
                params.push((name, v.normalize().to_string()));
            }
        };
        decimal("quantity", &self.quantity);
        decimal("price", &self.price);
        decimal("triggerPrice", &self.trigger_price);
        decimal("activatePrice", &self.activate_price);
        decimal("callbackRate", &self.callback_rate);
        if let Some(side) = &self.position_side {
            params.push(("positionSide", side.to_string()));
        }
        if let Some(tif) = &self.time_in_force {
            params.push(("timeInForce", tif.to_string()));
        }
        if let Some(wt) = &self.working_type {
            params.push(("workingType", wt.to_string()));
        }
        if self.close_position {
            params.push(("closePosition", "true".into()));
        }
        if self.reduce_only {
            params.push(("reduceOnly", "true".into()));
        }
        if self.price_protect {
            params.push(("priceProtect", "TRUE".into()));
        }
        params.push(("clientAlgoId", self.client_algo_id.clone()));
        params
    }
}

/// True when `id` matches Binance's client order id pattern `^[\.A-Z\:/a-z0-9_-]{1,36}$`.
pub fn is_valid_client_id(id: &str) -> bool {
    (1..=36).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../../testdata/binance/", $name))
        };
    }

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn account_v2_carries_can_trade_and_the_leverage_of_each_symbol() {
        let account: Account =
            serde_json::from_str(fixture!("rest__account_v2_multi_assets.json")).unwrap();
        assert_eq!(account.can_trade, Some(true));
        assert_eq!(account.positions[0].symbol, "BTCUSDT");
        assert_eq!(account.positions[0].leverage, 100);
        assert_eq!(account.positions[0].position_side, PositionSide::Both);
        assert_eq!(account.total_wallet_balance, d("126.72469206"));
        // The documented single-asset example has no canTrade (SOURCES.md quirk 6): unknown, not false.
        let single: Account =
            serde_json::from_str(fixture!("rest__account_v2_single_asset.json")).unwrap();
        assert_eq!(single.can_trade, None);
        assert_eq!(single.positions[0].leverage, 100);
    }

    #[test]
    fn time_and_ping() {
        let time: ServerTime = serde_json::from_str(fixture!("rest__time.json")).unwrap();
        assert_eq!(time.server_time, 1_499_827_319_559);
        let ping: serde_json::Value = serde_json::from_str(fixture!("rest__ping.json")).unwrap();
        assert_eq!(ping, serde_json::json!({}));
    }

    #[test]
    fn exchange_info_filters() {
        let info: ExchangeInfo =
            serde_json::from_str(fixture!("rest__exchange_info.json")).unwrap();
        assert_eq!(info.rate_limits.len(), 2);
        assert_eq!(info.rate_limits[0].rate_limit_type, "REQUEST_WEIGHT");
        assert_eq!(info.rate_limits[0].limit, 2400);
        let symbol = &info.symbols[0];
        assert_eq!(symbol.symbol, "BLZUSDT");
        assert_eq!(symbol.price_precision, 5);
        assert!(symbol.filters.contains(&SymbolFilter::PriceFilter {
            min_price: d("0.0001"),
            max_price: d("300"),
            tick_size: d("0.0001"),
        }));
        assert!(symbol.filters.contains(&SymbolFilter::MarketLotSize {
            min_qty: d("1"),
            max_qty: d("590119"),
            step_size: d("1"),
        }));
        assert!(symbol
            .filters
            .contains(&SymbolFilter::MinNotional { notional: d("5.0") }));
        assert!(symbol.filters.contains(&SymbolFilter::PercentPrice {
            multiplier_up: d("1.1500"),
            multiplier_down: d("0.8500"),
        }));
    }

    #[test]
    fn premium_index() {
        let p: PremiumIndex = serde_json::from_str(fixture!("rest__premium_index.json")).unwrap();
        assert_eq!(p.mark_price, d("11793.63104562"));
        let list: Vec<PremiumIndex> =
            serde_json::from_str(fixture!("rest__premium_index_list.json")).unwrap();
        assert!(!list.is_empty());
    }

    #[test]
    fn order_shapes_of_every_endpoint() {
        let new: Order = serde_json::from_str(fixture!("rest__new_order.json")).unwrap();
        assert_eq!(new.order_id, 22_542_179);
        assert_eq!(new.status, OrderStatus::New);
        assert_eq!(new.cum_qty, Some(Decimal::ZERO));
        assert_eq!(new.avg_price, Decimal::ZERO);
        assert_eq!(new.time, None);
        assert_eq!(new.time_in_force, TimeInForce::Gtd);
        let query: Order = serde_json::from_str(fixture!("rest__query_order.json")).unwrap();
        assert_eq!(query.order_type, OrderType::TrailingStopMarket);
        assert_eq!(query.time, Some(1_579_276_756_075));
        assert_eq!(query.orig_qty, d("0.40"));
        assert_eq!(query.cum_qty, None);
        let cancel: Order = serde_json::from_str(fixture!("rest__cancel_order.json")).unwrap();
        assert_eq!(cancel.status, OrderStatus::Canceled);
        for list in [
            fixture!("rest__open_orders.json"),
            fixture!("rest__all_orders.json"),
        ] {
            let orders: Vec<Order> = serde_json::from_str(list).unwrap();
            assert_eq!(orders.len(), 1);
        }
    }

    #[test]
    fn account_endpoints() {
        let trades: Vec<UserTrade> =
            serde_json::from_str(fixture!("rest__user_trades.json")).unwrap();
        assert_eq!(trades[0].realized_pnl, d("-0.91539999"));
        assert_eq!(trades[0].side, Side::Sell);
        let positions: Vec<PositionRisk> =
            serde_json::from_str(fixture!("rest__position_risk_v3_oneway.json")).unwrap();
        assert_eq!(positions[0].position_amt, d("30"));
        let hedge: Vec<PositionRisk> =
            serde_json::from_str(fixture!("rest__position_risk_v3_hedge.json")).unwrap();
        assert!(!hedge.is_empty());
        let balances: Vec<Balance> =
            serde_json::from_str(fixture!("rest__balance_v3.json")).unwrap();
        assert_eq!(balances[0].balance, d("122607.35137903"));
        let leverage: LeverageChange =
            serde_json::from_str(fixture!("rest__leverage.json")).unwrap();
        assert_eq!(leverage.leverage, 21);
        let mode: PositionMode =
            serde_json::from_str(fixture!("rest__position_side_dual_get.json")).unwrap();
        assert!(mode.dual_side_position);
        for file in [
            fixture!("rest__listen_key_create.json"),
            fixture!("rest__listen_key_keepalive.json"),
        ] {
            let key: ListenKey = serde_json::from_str(file).unwrap();
            assert_eq!(key.listen_key.len(), 64);
        }
    }

    #[test]
    fn algo_orders() {
        let new: AlgoOrder = serde_json::from_str(fixture!("rest__algo_order_new.json")).unwrap();
        assert_eq!(new.algo_status, AlgoStatus::New);
        assert_eq!(new.activate_price, None);
        assert_eq!(new.trigger_price, Some(d("750.000")));
        let query: AlgoOrder =
            serde_json::from_str(fixture!("rest__algo_order_query.json")).unwrap();
        assert_eq!(query.actual_order_id, None);
        assert_eq!(query.algo_status, AlgoStatus::Canceled);
        let open: Vec<AlgoOrder> =
            serde_json::from_str(fixture!("rest__open_algo_orders.json")).unwrap();
        assert_eq!(open[0].algo_id, 2_148_627);
        let all: Vec<AlgoOrder> =
            serde_json::from_str(fixture!("rest__all_algo_orders.json")).unwrap();
        assert!(!all.is_empty());
        let cancel: AlgoCancel =
            serde_json::from_str(fixture!("rest__algo_order_cancel.json")).unwrap();
        assert_eq!(cancel.code, "200");
    }

    #[test]
    fn unknown_enum_values_are_kept() {
        let status: OrderStatus = serde_json::from_str(r#""PENDING_SOMETHING""#).unwrap();
        assert_eq!(status, OrderStatus::Other("PENDING_SOMETHING".into()));
        assert_eq!(status.as_str(), "PENDING_SOMETHING");
        assert!(!status.is_final());
    }

    #[test]
    fn new_order_params() {
        let order = NewOrder::limit("BTCUSDT", Side::Buy, d("0.0100"), d("95000.10"), "cid-1")
            .reduce_only(true)
            .response_type(ResponseType::Result);
        let params = order.params();
        let find = |k: &str| {
            params
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(find("type"), Some("LIMIT"));
        assert_eq!(find("price"), Some("95000.1"));
        assert_eq!(find("quantity"), Some("0.01"));
        assert_eq!(find("reduceOnly"), Some("true"));
        assert_eq!(find("timeInForce"), Some("GTC"));
        assert_eq!(find("newOrderRespType"), Some("RESULT"));
        assert_eq!(find("newClientOrderId"), Some("cid-1"));
    }

    #[test]
    fn client_id_pattern() {
        assert!(is_valid_client_id("abc.DEF:1/2_3-4"));
        assert!(!is_valid_client_id(""));
        assert!(!is_valid_client_id(&"a".repeat(37)));
        assert!(!is_valid_client_id("has space"));
    }
}
