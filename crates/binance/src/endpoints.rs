//! The typed endpoints of [`RestClient`]: one method per Binance call, with its path, security
//! type and documented request weight. Order placement checks the client order id locally
//! (nothing is sent when it cannot be valid) and never retries on its own.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::Method;
use serde::Deserialize;

use crate::error::Error;
use crate::filters::SymbolRules;
use crate::rest::{Call, RestClient, Security};
use crate::types::{
    is_valid_client_id, Account, AlgoCancel, AlgoOrder, AlgoRef, Balance, ExchangeInfo,
    LeverageChange, ListenKey, NewAlgoOrder, NewOrder, Order, OrderRef, PositionMode, PositionRisk,
    PremiumIndex, ServerTime, UserTrade,
};

/// An empty JSON object reply (`{}`); any other fields are ignored.
#[derive(Debug, Deserialize)]
struct Empty {}

impl RestClient {
    /// `GET /fapi/v1/ping`: connectivity check.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn ping(&self) -> Result<(), Error> {
        let _: Empty = self
            .send(Call::new(Method::GET, "/fapi/v1/ping", Security::Public, 1))
            .await?;
        Ok(())
    }

    /// `GET /fapi/v1/time`: the server's clock in ms (does not change the offset; see
    /// [`RestClient::sync_time`]).
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn server_time(&self) -> Result<i64, Error> {
        let time: ServerTime = self
            .send(Call::new(Method::GET, "/fapi/v1/time", Security::Public, 1))
            .await?;
        Ok(time.server_time)
    }

    /// `GET /fapi/v1/exchangeInfo`. Refreshes the symbol-rules cache and the rate limits of the
    /// governor.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn exchange_info(&self) -> Result<ExchangeInfo, Error> {
        let info: ExchangeInfo = self
            .send(Call::new(
                Method::GET,
                "/fapi/v1/exchangeInfo",
                Security::Public,
                1,
            ))
            .await?;
        let rules: HashMap<String, Arc<SymbolRules>> = info
            .symbols
            .iter()
            .map(|s| (s.symbol.clone(), Arc::new(SymbolRules::from_info(s))))
            .collect();
        self.cache_rules(rules);
        self.set_rate_limits(&info.rate_limits);
        Ok(info)
    }

    /// The cached rules of `symbol`, if exchangeInfo was loaded and lists it.
    pub fn symbol_rules(&self, symbol: &str) -> Option<Arc<SymbolRules>> {
        self.cached_rules(symbol)
    }

    /// The rules of `symbol`, loading exchangeInfo when they are not cached yet.
    ///
    /// # Errors
    /// Errors of exchangeInfo, or [`Error::InvalidRequest`] when the symbol is not listed.
    pub async fn load_symbol_rules(&self, symbol: &str) -> Result<Arc<SymbolRules>, Error> {
        if let Some(rules) = self.cached_rules(symbol) {
            return Ok(rules);
        }
        self.exchange_info().await?;
        self.cached_rules(symbol)
            .ok_or_else(|| Error::InvalidRequest(format!("symbol {symbol} is not listed")))
    }

    /// `GET /fapi/v1/premiumIndex?symbol=`: mark and index price.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn premium_index(&self, symbol: &str) -> Result<PremiumIndex, Error> {
        self.send(
            Call::new(Method::GET, "/fapi/v1/premiumIndex", Security::Public, 1)
                .param("symbol", symbol),
        )
        .await
    }

    /// `GET /fapi/v1/premiumIndex` without a symbol: every symbol's mark price in one request
    /// (weight 10), for when many symbols need a price at once.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn premium_index_all(&self) -> Result<Vec<PremiumIndex>, Error> {
        self.send(Call::new(
            Method::GET,
            "/fapi/v1/premiumIndex",
            Security::Public,
            10,
        ))
        .await
    }

    /// `POST /fapi/v1/leverage`.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn change_leverage(
        &self,
        symbol: &str,
        leverage: u32,
    ) -> Result<LeverageChange, Error> {
        self.send(
            Call::new(Method::POST, "/fapi/v1/leverage", Security::Signed, 1)
                .param("symbol", symbol)
                .param("leverage", leverage),
        )
        .await
    }

    /// `GET /fapi/v1/positionSide/dual`: hedge mode (true) or one-way mode (false).
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn position_mode(&self) -> Result<PositionMode, Error> {
        self.send(Call::new(
            Method::GET,
            "/fapi/v1/positionSide/dual",
            Security::Signed,
            30,
        ))
        .await
    }

    /// `POST /fapi/v1/order`. Sent exactly once.
    ///
    /// With the default ACK reply a MARKET order comes back `NEW` with zeros: **that is not a
    /// fill**. Confirm fills with [`RestClient::query_order`], the user stream, or a RESULT reply
    /// whose status is final.
    ///
    /// # Errors
    /// [`Error::Ambiguous`] when the order may exist (look it up by `client_order_id`);
    /// [`Error::Rejected`] for a definite refusal; [`Error::Transient`] when nothing was executed;
    /// [`Error::InvalidRequest`] when the client order id cannot be valid (nothing sent).
    pub async fn place_order(&self, order: &NewOrder) -> Result<Order, Error> {
        if !is_valid_client_id(&order.client_order_id) {
            return Err(Error::InvalidRequest(format!(
                "client order id {:?} does not match ^[.A-Z:/a-z0-9_-]{{1,36}}$",
                order.client_order_id
            )));
        }
        self.send(
            Call::new(Method::POST, "/fapi/v1/order", Security::Signed, 0)
                .params(order.params())
                .order(),
        )
        .await
    }

    /// `GET /fapi/v1/order`.
    ///
    /// # Errors
    /// [`Error::NotFound`] for -2013, plus transport and API errors.
    pub async fn query_order(&self, symbol: &str, order: &OrderRef) -> Result<Order, Error> {
        self.send(order_ref(
            Call::new(Method::GET, "/fapi/v1/order", Security::Signed, 1).param("symbol", symbol),
            order,
        ))
        .await
    }

    /// [`RestClient::query_order`] with "does not exist" as `None`.
    ///
    /// # Errors
    /// Transport and API errors other than not-found.
    pub async fn find_order(&self, symbol: &str, order: &OrderRef) -> Result<Option<Order>, Error> {
        match self.query_order(symbol, order).await {
            Ok(order) => Ok(Some(order)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// `DELETE /fapi/v1/order`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the order is not open (-2011) or unknown (-2013);
    /// [`Error::Ambiguous`] when the cancel may or may not have happened.
    pub async fn cancel_order(&self, symbol: &str, order: &OrderRef) -> Result<Order, Error> {
        self.send(order_ref(
            Call::new(Method::DELETE, "/fapi/v1/order", Security::Signed, 1)
                .param("symbol", symbol),
            order,
        ))
        .await
    }

    /// `POST /fapi/v1/countdownCancelAll` (weight 10): cancel the symbol's open orders unless
    /// called again within `countdown_ms`; 0 stops the countdown.
    pub async fn countdown_cancel_all(&self, symbol: &str, countdown_ms: u64) -> Result<(), Error> {
        let call = Call::new(
            Method::POST,
            "/fapi/v1/countdownCancelAll",
            Security::Signed,
            10,
        )
        .param("symbol", symbol)
        .param("countdownTime", countdown_ms.to_string());
        let _: serde_json::Value = self.send(call).await?;
        Ok(())
    }

    /// `GET /fapi/v1/openOrders` for one symbol, or all (weight 40).
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn open_orders(&self, symbol: Option<&str>) -> Result<Vec<Order>, Error> {
        let mut call = Call::new(
            Method::GET,
            "/fapi/v1/openOrders",
            Security::Signed,
            if symbol.is_some() { 1 } else { 40 },
        );
        if let Some(symbol) = symbol {
            call = call.param("symbol", symbol);
        }
        self.send(call).await
    }

    /// `GET /fapi/v1/allOrders` (last 7 days; `limit` up to 1000, default 500).
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn all_orders(&self, symbol: &str, limit: Option<u32>) -> Result<Vec<Order>, Error> {
        let mut call = Call::new(Method::GET, "/fapi/v1/allOrders", Security::Signed, 5)
            .param("symbol", symbol);
        if let Some(limit) = limit {
            call = call.param("limit", limit);
        }
        self.send(call).await
    }

    /// `GET /fapi/v1/userTrades`, optionally for one order: the fills with price, quantity and fee.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn user_trades(
        &self,
        symbol: &str,
        order_id: Option<i64>,
    ) -> Result<Vec<UserTrade>, Error> {
        let mut call = Call::new(Method::GET, "/fapi/v1/userTrades", Security::Signed, 5)
            .param("symbol", symbol);
        if let Some(order_id) = order_id {
            call = call.param("orderId", order_id);
        }
        self.send(call).await
    }

    /// `GET /fapi/v3/positionRisk`: positions (and symbols with open orders).
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn position_risk(&self, symbol: Option<&str>) -> Result<Vec<PositionRisk>, Error> {
        let mut call = Call::new(Method::GET, "/fapi/v3/positionRisk", Security::Signed, 5);
        if let Some(symbol) = symbol {
            call = call.param("symbol", symbol);
        }
        self.send(call).await
    }

    /// `GET /fapi/v2/account`: `canTrade`, balances and each symbol's leverage setting. The v2
    /// call, because v3 dropped `canTrade` and the leverage column (reference, section 3.6).
    ///
    /// # Errors
    /// Transport and API errors; [`Error::Auth`] when the key is refused.
    pub async fn account(&self) -> Result<Account, Error> {
        self.send(Call::new(
            Method::GET,
            "/fapi/v2/account",
            Security::Signed,
            5,
        ))
        .await
    }

    /// `GET /fapi/v3/balance`.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn balances(&self) -> Result<Vec<Balance>, Error> {
        self.send(Call::new(
            Method::GET,
            "/fapi/v3/balance",
            Security::Signed,
            5,
        ))
        .await
    }

    /// `POST /fapi/v1/listenKey`: the active key (extended) or a new one.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn create_listen_key(&self) -> Result<String, Error> {
        let key: ListenKey = self
            .send(Call::new(
                Method::POST,
                "/fapi/v1/listenKey",
                Security::Key,
                1,
            ))
            .await?;
        Ok(key.listen_key)
    }

    /// `PUT /fapi/v1/listenKey`: extends the key by 60 minutes.
    ///
    /// # Errors
    /// [`Error::NotFound`] with code -1125 when the key is gone (create a new one).
    pub async fn keepalive_listen_key(&self, listen_key: &str) -> Result<(), Error> {
        let _: Empty = self
            .send(
                Call::new(Method::PUT, "/fapi/v1/listenKey", Security::Key, 1)
                    .param("listenKey", listen_key),
            )
            .await?;
        Ok(())
    }

    /// `DELETE /fapi/v1/listenKey`: closes the stream.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn close_listen_key(&self, listen_key: &str) -> Result<(), Error> {
        let _: Empty = self
            .send(
                Call::new(Method::DELETE, "/fapi/v1/listenKey", Security::Key, 1)
                    .param("listenKey", listen_key),
            )
            .await?;
        Ok(())
    }

    /// `POST /fapi/v1/algoOrder` (`algoType=CONDITIONAL`). Sent exactly once.
    ///
    /// # Errors
    /// As [`RestClient::place_order`]; an ambiguous reply means the algo order may exist (look it
    /// up by `client_algo_id`).
    pub async fn place_algo_order(&self, order: &NewAlgoOrder) -> Result<AlgoOrder, Error> {
        if !is_valid_client_id(&order.client_algo_id) {
            return Err(Error::InvalidRequest(format!(
                "client algo id {:?} does not match ^[.A-Z:/a-z0-9_-]{{1,36}}$",
                order.client_algo_id
            )));
        }
        self.send(
            Call::new(Method::POST, "/fapi/v1/algoOrder", Security::Signed, 0)
                .params(order.params())
                .order(),
        )
        .await
    }

    /// `GET /fapi/v1/algoOrder`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when it does not exist, plus transport and API errors.
    pub async fn query_algo_order(&self, algo: &AlgoRef) -> Result<AlgoOrder, Error> {
        self.send(algo_ref(
            Call::new(Method::GET, "/fapi/v1/algoOrder", Security::Signed, 1),
            algo,
        ))
        .await
    }

    /// [`RestClient::query_algo_order`] with "does not exist" as `None`.
    ///
    /// # Errors
    /// Transport and API errors other than not-found.
    pub async fn find_algo_order(&self, algo: &AlgoRef) -> Result<Option<AlgoOrder>, Error> {
        match self.query_algo_order(algo).await {
            Ok(order) => Ok(Some(order)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// `DELETE /fapi/v1/algoOrder`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when it is not open, plus transport and API errors.
    pub async fn cancel_algo_order(&self, algo: &AlgoRef) -> Result<AlgoCancel, Error> {
        self.send(algo_ref(
            Call::new(Method::DELETE, "/fapi/v1/algoOrder", Security::Signed, 1),
            algo,
        ))
        .await
    }

    /// `GET /fapi/v1/openAlgoOrders`.
    ///
    /// # Errors
    /// Transport and API errors.
    pub async fn open_algo_orders(&self, symbol: Option<&str>) -> Result<Vec<AlgoOrder>, Error> {
        let mut call = Call::new(
            Method::GET,
            "/fapi/v1/openAlgoOrders",
            Security::Signed,
            if symbol.is_some() { 1 } else { 40 },
        );
        if let Some(symbol) = symbol {
            call = call.param("symbol", symbol);
        }
        self.send(call).await
    }
}

fn order_ref(call: Call, order: &OrderRef) -> Call {
    match order {
        OrderRef::OrderId(id) => call.param("orderId", id),
        OrderRef::ClientOrderId(id) => call.param("origClientOrderId", id),
    }
}

fn algo_ref(call: Call, algo: &AlgoRef) -> Call {
    match algo {
        AlgoRef::AlgoId(id) => call.param("algoId", id),
        AlgoRef::ClientAlgoId(id) => call.param("clientAlgoId", id),
    }
}
