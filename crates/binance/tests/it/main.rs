//! Integration tests of the Binance client against a real simulator on a free port, one binary
//! with topic modules: REST (time, orders, faults, rate limits), the user data stream, and the
//! market stream.

mod fuzz;
mod market_stream;
mod rest;
mod support;
mod user_stream;
mod ws_api;
