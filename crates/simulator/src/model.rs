//! The simulator's own vocabulary of orders, positions, trades and algo orders, with the text
//! each enum has on Binance's wire. These types are private to the simulator: the Binance client
//! has its own, and fixtures from Binance's documentation keep the two honest.

use rust_decimal::Decimal;

use crate::error::ApiError;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? } else $err:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub(crate) enum $name { $($variant),+ }

        // Not every enum is both parsed from requests and printed, hence the allow.
        #[allow(dead_code)]
        impl $name {
            pub(crate) fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub(crate) fn parse(text: &str) -> Result<$name, ApiError> {
                match text { $($text => Ok($name::$variant),)+ _ => Err($err) }
            }
        }
    };
}

wire_enum!(Side { Buy => "BUY", Sell => "SELL" } else ApiError::bad(-1117, "Invalid side."));
wire_enum!(PositionSide { Both => "BOTH", Long => "LONG", Short => "SHORT" }
    else ApiError::bad(-4061, "Order's position side does not match user's setting."));
wire_enum!(TimeInForce { Gtc => "GTC", Ioc => "IOC", Fok => "FOK", Gtx => "GTX", Gtd => "GTD" }
    else ApiError::bad(-1115, "Invalid timeInForce."));
wire_enum!(
    /// Order types a `/fapi/v1/order` request may name; conditional ones only to be refused with -4120.
    OrderType {
        Limit => "LIMIT", Market => "MARKET", Stop => "STOP", StopMarket => "STOP_MARKET",
        TakeProfit => "TAKE_PROFIT", TakeProfitMarket => "TAKE_PROFIT_MARKET",
        TrailingStopMarket => "TRAILING_STOP_MARKET",
    } else ApiError::bad(-1116, "Invalid orderType."));
wire_enum!(OrderStatus {
    New => "NEW", PartiallyFilled => "PARTIALLY_FILLED", Filled => "FILLED",
    Canceled => "CANCELED", Expired => "EXPIRED",
} else ApiError::bad(-1102, "Invalid status."));
wire_enum!(AlgoStatus {
    New => "NEW", Canceled => "CANCELED", Triggering => "TRIGGERING", Triggered => "TRIGGERED",
    Finished => "FINISHED", Rejected => "REJECTED", Expired => "EXPIRED",
} else ApiError::bad(-1102, "Invalid algoStatus."));
wire_enum!(MarginType { Isolated => "ISOLATED", Crossed => "CROSSED" }
    else ApiError::bad(-1102, "Mandatory parameter 'marginType' was not sent, was empty/null, or malformed."));

impl Side {
    pub(crate) fn sign(self) -> Decimal {
        match self {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        }
    }
}

impl OrderType {
    pub(crate) fn is_conditional(self) -> bool {
        !matches!(self, OrderType::Limit | OrderType::Market)
    }
}

impl OrderStatus {
    pub(crate) fn is_final(self) -> bool {
        matches!(
            self,
            OrderStatus::Filled | OrderStatus::Canceled | OrderStatus::Expired
        )
    }
}

impl MarginType {
    /// positionRisk and ACCOUNT_UPDATE spell it in lower case and say "cross".
    pub(crate) fn lower(self) -> &'static str {
        match self {
            MarginType::Isolated => "isolated",
            MarginType::Crossed => "cross",
        }
    }
}

/// An order on `/fapi/v1/order` (or one placed by a triggered algo order).
#[derive(Debug, Clone)]
pub(crate) struct Order {
    pub(crate) order_id: i64,
    pub(crate) symbol: String,
    pub(crate) client_order_id: String,
    pub(crate) side: Side,
    pub(crate) position_side: PositionSide,
    pub(crate) order_type: OrderType,
    /// For orders placed by an algo order: the algo's type; otherwise the same as `order_type`.
    pub(crate) orig_type: OrderType,
    pub(crate) time_in_force: TimeInForce,
    pub(crate) orig_qty: Decimal,
    /// Limit price, zero for MARKET.
    pub(crate) price: Decimal,
    pub(crate) stop_price: Decimal,
    pub(crate) status: OrderStatus,
    pub(crate) executed_qty: Decimal,
    pub(crate) cum_quote: Decimal,
    pub(crate) reduce_only: bool,
    pub(crate) close_position: bool,
    pub(crate) working_type: &'static str,
    pub(crate) price_protect: bool,
    pub(crate) good_till_date: i64,
    pub(crate) time: i64,
    pub(crate) update_time: i64,
    /// Binance's expiry reason (`er`): 9 = MARKET order not completely filled.
    pub(crate) expire_reason: u8,
    /// Fill batches still to come for a taker order (the `partial_fills` knob).
    pub(crate) chunks_left: u32,
    /// True while the asynchronous filler still works on the order's taker part. A `RESULT` reply
    /// waits for this to end; a LIMIT order that only rests answers at once.
    pub(crate) taker_pending: bool,
    /// The algo order that placed this order, if any.
    pub(crate) algo_id: Option<i64>,
}

impl Order {
    pub(crate) fn remaining(&self) -> Decimal {
        self.orig_qty - self.executed_qty
    }

    pub(crate) fn avg_price(&self) -> Decimal {
        if self.executed_qty.is_zero() {
            Decimal::ZERO
        } else {
            self.cum_quote / self.executed_qty
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        !self.status.is_final()
    }
}

/// One side of one symbol's position (one-way mode uses `BOTH` only).
#[derive(Debug, Clone, Default)]
pub(crate) struct Position {
    /// Signed: positive long, negative short.
    pub(crate) amount: Decimal,
    pub(crate) entry_price: Decimal,
    /// Accumulated realized PnL before fees (`cr` in ACCOUNT_UPDATE).
    pub(crate) realized: Decimal,
    pub(crate) update_time: i64,
}

/// One execution of an order against the book.
#[derive(Debug, Clone)]
pub(crate) struct Trade {
    pub(crate) id: i64,
    pub(crate) order_id: i64,
    pub(crate) symbol: String,
    pub(crate) side: Side,
    pub(crate) position_side: PositionSide,
    pub(crate) price: Decimal,
    pub(crate) qty: Decimal,
    pub(crate) commission: Decimal,
    pub(crate) realized_pnl: Decimal,
    pub(crate) maker: bool,
    pub(crate) time: i64,
}

/// A conditional order on the Algo Order API.
#[derive(Debug, Clone)]
pub(crate) struct AlgoOrder {
    pub(crate) algo_id: i64,
    pub(crate) client_algo_id: String,
    pub(crate) order_type: OrderType,
    pub(crate) symbol: String,
    pub(crate) side: Side,
    pub(crate) position_side: PositionSide,
    pub(crate) time_in_force: TimeInForce,
    /// `None` with `close_position`.
    pub(crate) quantity: Option<Decimal>,
    pub(crate) price: Decimal,
    pub(crate) trigger_price: Decimal,
    pub(crate) working_type: &'static str,
    pub(crate) close_position: bool,
    pub(crate) price_protect: bool,
    pub(crate) reduce_only: bool,
    pub(crate) activate_price: Option<Decimal>,
    pub(crate) callback_rate: Option<Decimal>,
    pub(crate) status: AlgoStatus,
    pub(crate) create_time: i64,
    pub(crate) update_time: i64,
    pub(crate) trigger_time: i64,
    pub(crate) actual_order_id: Option<i64>,
    pub(crate) reject_reason: String,
    /// Trailing stop: whether the activation price has been reached, and the best price since.
    pub(crate) trailing_active: bool,
    pub(crate) trailing_extreme: Decimal,
}
