//! quantum's client for Binance USDⓈ-M Futures: signed REST calls with server-time sync and a
//! rate-limit governor, the symbol filters that make an order valid before it is sent, the user
//! data stream (fills, account and algo updates) and the market streams (mark price, book
//! ticker). This crate owns Binance's JSON field names and its signing; nothing else in quantum
//! should know them. Its one dependency inside the workspace is `model`, for the order [`Side`].
//!
//! The two promises this crate serves, and how:
//!
//! - *Never report an unconfirmed fill.* An ACK reply to a MARKET order is `NEW` with zeros; the
//!   types say so ([`Order`]), and fills are confirmed only by a final [`OrderStatus`], a
//!   `TRADE` [`OrderTradeUpdate`], or [`RestClient::user_trades`].
//! - *Never place a duplicate.* Order placement is sent exactly once. Failures are classified by
//!   what the caller must do ([`Error`]): an [`Error::Ambiguous`] order may exist and must be
//!   looked up by its client order id, never resent blindly. The only automatic retry of a
//!   write is after -1021, which Binance refuses before executing anything.
//!
//! Layout, in the order a request flows: [`config`] (URLs, keys, timings), `sign` (HMAC, Ed25519, RSA),
//! `ratelimit` (the governor), `rest` (transport, time sync, retry rules), `endpoints` (typed
//! calls), [`types`] (REST wire types), [`filters`] (tick/step rounding), [`error`]
//! (classification), `ws` (WebSocket plumbing), [`user_stream`], [`market_stream`], [`events`]
//! (stream wire types), `wire` (decimal and enum decoding).

pub mod config;
mod endpoints;
pub mod error;
pub mod events;
pub mod filters;
pub mod market_stream;
mod ratelimit;
mod rest;
mod sign;
pub mod types;
pub mod user_stream;
mod wire;
mod ws;
pub mod ws_api;

pub use config::{Config, Secret, Venue};
pub use error::Error;
pub use events::{
    AccountUpdate, AlgoUpdate, BookTicker, ExecutionType, MarkPriceUpdate, OrderTradeUpdate,
    OrderUpdate, TradeLite,
};
pub use filters::{FilterError, LotKind, Rounding, SymbolRules};
pub use market_stream::{
    book_ticker_stream, mark_price_stream, MarketEvent, MarketStream, MarketStreamConfig,
    ALL_MARK_PRICES_STREAM,
};
/// The order side is `model`'s, the one `Side` of the workspace (the engine decides it, this
/// crate sends and reads it); re-exported because the request and reply types here carry it.
pub use model::Side;
pub use ratelimit::{Limits, SharedBudget, Verdict};
pub use rest::RestClient;
pub use sign::{signature, Ed25519Key, PrivateKey, RsaKey};
pub use types::{
    Account, AccountPosition, AlgoOrder, AlgoOrderType, AlgoRef, AlgoStatus, NewAlgoOrder,
    NewOrder, NewOrderKind, Order, OrderRef, OrderStatus, OrderType, PositionSide, ResponseType,
    TimeInForce,
};
pub use user_stream::{UserEvent, UserStream, UserStreamConfig, UserStreamPath};
pub use ws::Backoff;
pub use ws_api::{WsApiClient, WsApiConfig};
