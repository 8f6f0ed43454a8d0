//! quantum's vocabulary, shared by every other crate: validated ids ([`Symbol`], [`IntentId`],
//! [`ClientOrderId`]), the trade intent a strategy sends and the execution result quantum
//! publishes (their JSON is the bus contract), exit plans, and the exchange order status with its
//! one transition table, and the order [`Side`]. No I/O, no async, no clock: times are plain milliseconds handed in.
//!
//! Money is `rust_decimal::Decimal` throughout. On the bus, prices and quantities are JSON numbers
//! that keep their exact decimal digits (serde_json's `arbitrary_precision`), never floats.

pub mod control;
pub mod ids;
pub mod intent;
pub mod order;
pub mod position;
pub mod result;

pub use control::{ControlError, TradingControl, TradingState};
pub use ids::{ClientOrderId, IdError, IntentId, Symbol};
pub use intent::{Action, ExitLevel, ExitPlan, IntentBuilder, IntentError, TradeIntent};
pub use order::{OrderEvent, OrderStatus, PositionSide, Side, TransitionError};
pub use position::{
    Direction, EventKind, ExitReason, PositionEvent, PositionEventError, ProtectionAction,
    ProtectionEvent, ProtectiveKind,
};
pub use result::{
    ConfirmedBy, Execution, ExecutionResult, ResultDocError, ResultError, ResultStatus,
};
