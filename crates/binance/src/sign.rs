//! Request signing: the HMAC-SHA256 of exactly the bytes sent (query string, then form body,
//! concatenated with nothing between them), as lower-case hex, appended as the last parameter.
//! Kept apart from the HTTP code so the documented test vectors pin it directly.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `hex(HMAC_SHA256(secret, payload))`.
pub fn signature(secret: &str, payload: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps us panic-free.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// URL-encodes parameters in the given order (`k=v&k2=v2`), the way they will be sent.
pub(crate) fn encode_params(params: &[(&str, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        serializer.append_pair(name, value);
    }
    serializer.finish()
}

/// Appends `signature=<hmac>` to an encoded parameter string.
/// An Ed25519 private key for signing requests: REST (base64 of the signature over the same
/// payload as HMAC's, URL-encoded) and the WebSocket API (base64). The key never prints.
#[derive(Clone)]
pub struct Ed25519Key(std::sync::Arc<ed25519_dalek::SigningKey>);

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ed25519Key(***)")
    }
}

impl Ed25519Key {
    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`, as `openssl genpkey
    /// -algorithm ed25519` writes it). The error never contains the key text.
    pub fn from_pem(pem: &str) -> Result<Ed25519Key, String> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(|k| Ed25519Key(std::sync::Arc::new(k)))
            .map_err(|e| format!("not an Ed25519 PKCS#8 PEM private key ({e})"))
    }

    /// A key from its 32 secret bytes (for tests and tools that hold raw keys).
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Ed25519Key {
        Ed25519Key(std::sync::Arc::new(ed25519_dalek::SigningKey::from_bytes(
            bytes,
        )))
    }

    /// Base64 of the Ed25519 signature over `payload`.
    pub fn sign_base64(&self, payload: &str) -> String {
        use base64::Engine as _;
        use ed25519_dalek::Signer as _;
        base64::engine::general_purpose::STANDARD.encode(self.0.sign(payload.as_bytes()).to_bytes())
    }
}

/// Appends `signature` to the encoded parameters with `key` (URL-encoded base64).
pub(crate) fn append_ed25519_signature(key: &Ed25519Key, encoded: &str) -> String {
    let sig: String =
        form_urlencoded::byte_serialize(key.sign_base64(encoded).as_bytes()).collect();
    if encoded.is_empty() {
        format!("signature={sig}")
    } else {
        format!("{encoded}&signature={sig}")
    }
}

pub(crate) fn append_signature(secret: &str, encoded: &str) -> String {
    let sig = signature(secret, encoded);
    if encoded.is_empty() {
        format!("signature={sig}")
    } else {
        format!("{encoded}&signature={sig}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binance_documented_vector() {
        // The HMAC example of Binance's API docs (general info, "SIGNED endpoint examples").
        let secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
        let query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        assert_eq!(
            signature(secret, query),
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
    }

    #[test]
    fn usdm_futures_documented_vector() {
        // The USD-M futures general-info example, recorded in testdata/binance/SOURCES.md.
        let secret = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9";
        let params = [
            ("symbol", "BTCUSDT".to_string()),
            ("side", "BUY".into()),
            ("type", "LIMIT".into()),
            ("quantity", "1".into()),
            ("price", "9000".into()),
            ("timeInForce", "GTC".into()),
            ("recvWindow", "5000".into()),
            ("timestamp", "1591702613943".into()),
        ];
        let signed = append_signature(secret, &encode_params(&params));
        assert!(signed.ends_with(
            "&signature=3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
        ));
        assert!(signed.starts_with("symbol=BTCUSDT&side=BUY"));
    }

    #[test]
    fn reserved_characters_are_encoded_before_signing() {
        let encoded = encode_params(&[("newClientOrderId", "a:b/c d".to_string())]);
        assert_eq!(encoded, "newClientOrderId=a%3Ab%2Fc+d");
    }
}
