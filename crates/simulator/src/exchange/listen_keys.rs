//! Listen keys for the user data stream (`/fapi/v1/listenKey`): one active key per account,
//! extended by keepalives, expiring after the configured lifetime with a `listenKeyExpired` event,
//! and the `disconnect_user_streams` fault.

use super::*;

impl Exchange {
    /// `POST /fapi/v1/listenKey`: the active key is returned again (and extended) if there is one.
    pub(crate) fn create_listen_key(&mut self, now: i64) -> String {
        let ttl = self.listen_key_ttl_ms;
        if let Some((key, entry)) = self
            .listen_keys
            .iter_mut()
            .find(|(_, k)| k.expires_at > now)
        {
            entry.expires_at = now + ttl;
            return key.clone();
        }
        let key = self.random_id(64);
        self.listen_keys.insert(
            key.clone(),
            ListenKey {
                expires_at: now + ttl,
            },
        );
        key
    }

    /// The live key a keepalive or close refers to: the one named in `listenKey` when the client
    /// sends it (python-binance does), else the account's live key.
    pub(super) fn live_listen_key(
        &self,
        requested: Option<&str>,
        now: i64,
    ) -> Result<String, ApiError> {
        self.listen_keys
            .iter()
            .find(|(key, entry)| {
                entry.expires_at > now && requested.is_none_or(|r| r == key.as_str())
            })
            .map(|(key, _)| key.clone())
            .ok_or_else(|| ApiError::bad(-1125, "This listenKey does not exist."))
    }

    /// `PUT /fapi/v1/listenKey`: extends the key by its lifetime.
    pub(crate) fn keepalive_listen_key(
        &mut self,
        requested: Option<&str>,
        now: i64,
    ) -> Result<String, ApiError> {
        let key = self.live_listen_key(requested, now)?;
        let ttl = self.listen_key_ttl_ms;
        if let Some(entry) = self.listen_keys.get_mut(&key) {
            entry.expires_at = now + ttl;
        }
        Ok(key)
    }

    /// `DELETE /fapi/v1/listenKey`: ends the key; its connections get `listenKeyExpired` and then
    /// nothing more.
    pub(crate) fn close_listen_key(
        &mut self,
        requested: Option<&str>,
        now: i64,
    ) -> Result<(), ApiError> {
        let key = self.live_listen_key(requested, now)?;
        self.listen_keys.remove(&key);
        self.expire_key(key, now);
        Ok(())
    }

    pub(crate) fn listen_key_valid(&self, key: &str, now: i64) -> bool {
        self.listen_keys
            .get(key)
            .is_some_and(|k| k.expires_at > now)
    }

    pub(super) fn expire_key(&mut self, listen_key: String, now: i64) {
        let payload = json!({ "e": "listenKeyExpired", "E": now, "listenKey": listen_key });
        self.outbox.push(Outgoing::ListenKeyExpired {
            listen_key,
            payload,
        });
    }

    /// The `expire_listen_keys` fault.
    pub(crate) fn expire_all_listen_keys(&mut self, now: i64) {
        let keys: Vec<String> = self.listen_keys.drain().map(|(k, _)| k).collect();
        for key in keys {
            self.expire_key(key, now);
        }
    }

    pub(crate) fn disconnect_user_streams(&mut self) {
        self.outbox.push(Outgoing::DisconnectUserStreams);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn exchange() -> Exchange {
        Exchange::new(&SimConfig::default()).expect("default config")
    }

    fn expired(ex: &mut Exchange) -> Vec<String> {
        ex.drain_outbox()
            .into_iter()
            .filter_map(|o| match o {
                Outgoing::ListenKeyExpired { listen_key, .. } => Some(listen_key),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_key_per_account_extended_by_a_keepalive() {
        let mut ex = exchange();
        let ttl = ex.listen_key_ttl_ms;
        let key = ex.create_listen_key(NOW);
        assert_eq!(
            ex.create_listen_key(NOW + 10),
            key,
            "the live key is returned again"
        );
        assert_eq!(
            ex.keepalive_listen_key(None, NOW + ttl - 1),
            Ok(key.clone())
        );
        assert!(
            ex.listen_key_valid(&key, NOW + ttl + 10),
            "the keepalive extended it"
        );
        assert!(!ex.listen_key_valid(&key, NOW + 2 * ttl));
        assert_eq!(
            ex.keepalive_listen_key(Some("another"), NOW)
                .unwrap_err()
                .code,
            -1125
        );
    }

    #[test]
    fn closing_a_key_tells_its_streams_and_ends_it() {
        let mut ex = exchange();
        let key = ex.create_listen_key(NOW);
        ex.close_listen_key(Some(&key), NOW + 1).unwrap();
        assert_eq!(expired(&mut ex), std::slice::from_ref(&key));
        assert!(!ex.listen_key_valid(&key, NOW + 2));
        assert_eq!(ex.close_listen_key(None, NOW + 2).unwrap_err().code, -1125);
        let next = ex.create_listen_key(NOW + 3);
        assert_ne!(next, key, "a new key after the old one ended");
        ex.expire_all_listen_keys(NOW + 4);
        assert_eq!(expired(&mut ex), [next]);
    }
}
