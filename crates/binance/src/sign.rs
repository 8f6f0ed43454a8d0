//! Request signing: the HMAC-SHA256 of exactly the bytes sent (query string, then form body,
//! concatenated with nothing between them), as lower-case hex, appended as the last parameter;
//! or, with an asymmetric key ([`PrivateKey`]: Ed25519 or RSA PKCS#1 v1.5 / SHA-256), the base64
//! signature of the same payload, URL-encoded. Kept apart from the HTTP code so the documented
//! test vectors pin it directly. Private keys never print (`Debug` shows `***`).

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

/// An RSA private key for signing requests: RSASSA-PKCS1-v1_5 over SHA-256, base64, over the same
/// payload as HMAC's (URL-encoded on REST, as Binance documents for RSA keys; plain base64 in the
/// WebSocket API's JSON). The key never prints.
#[derive(Clone)]
pub struct RsaKey(std::sync::Arc<rsa::pkcs1v15::SigningKey<sha2::Sha256>>);

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaKey(***)")
    }
}

impl RsaKey {
    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`, as `openssl genpkey
    /// -algorithm RSA` writes it). The error never contains the key text.
    pub fn from_pem(pem: &str) -> Result<RsaKey, String> {
        use rsa::pkcs8::DecodePrivateKey as _;
        rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .map(|k| RsaKey(std::sync::Arc::new(rsa::pkcs1v15::SigningKey::new(k))))
            .map_err(|e| format!("not an RSA PKCS#8 PEM private key ({e})"))
    }

    /// Base64 of the RSASSA-PKCS1-v1_5 / SHA-256 signature over `payload`. Signing with a key
    /// that parsed cannot fail for a SHA-256 digest; if it ever did, the signature is empty and
    /// Binance refuses the request (-1022), rather than this panicking.
    pub fn sign_base64(&self, payload: &str) -> String {
        use base64::Engine as _;
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        match self.0.try_sign(payload.as_bytes()) {
            Ok(signature) => base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
            Err(_) => String::new(),
        }
    }
}

/// An asymmetric API key that signs requests instead of the HMAC secret.
#[derive(Debug, Clone)]
pub enum PrivateKey {
    /// Ed25519: REST and the WebSocket API; the only type that can `session.logon`.
    Ed25519(Ed25519Key),
    /// RSA: REST and, per request, the WebSocket API.
    Rsa(RsaKey),
}

impl PrivateKey {
    /// Base64 of the key's signature over `payload`.
    pub fn sign_base64(&self, payload: &str) -> String {
        match self {
            PrivateKey::Ed25519(key) => key.sign_base64(payload),
            PrivateKey::Rsa(key) => key.sign_base64(payload),
        }
    }
}

impl From<Ed25519Key> for PrivateKey {
    fn from(key: Ed25519Key) -> PrivateKey {
        PrivateKey::Ed25519(key)
    }
}

impl From<RsaKey> for PrivateKey {
    fn from(key: RsaKey) -> PrivateKey {
        PrivateKey::Rsa(key)
    }
}

/// Appends `signature` to the encoded parameters with `key` (URL-encoded base64).
pub(crate) fn append_key_signature(key: &PrivateKey, encoded: &str) -> String {
    let sig: String =
        form_urlencoded::byte_serialize(key.sign_base64(encoded).as_bytes()).collect();
    if encoded.is_empty() {
        format!("signature={sig}")
    } else {
        format!("{encoded}&signature={sig}")
    }
}

/// Appends `signature=<hmac>` to an encoded parameter string.
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
    fn an_rsa_key_signs_pkcs1v15_sha256_in_url_encoded_base64_and_never_prints() {
        use base64::Engine as _;
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::signature::Verifier as _;
        let key = RsaKey::from_pem(include_str!(
            "../../simulator/testdata/test-rsa-private.pem"
        ))
        .expect("the test key reads");
        assert_eq!(format!("{key:?}"), "RsaKey(***)");
        assert_eq!(
            format!("{:?}", PrivateKey::from(key.clone())),
            "Rsa(RsaKey(***))"
        );
        let payload = "symbol=BTCUSDT&side=BUY&timestamp=1";
        let public = rsa::RsaPublicKey::from_public_key_pem(include_str!(
            "../../simulator/testdata/test-rsa-public.pem"
        ))
        .unwrap();
        let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(public);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key.sign_base64(payload))
            .unwrap();
        let signature = rsa::pkcs1v15::Signature::try_from(bytes.as_slice()).unwrap();
        assert!(verifier.verify(payload.as_bytes(), &signature).is_ok());
        // On REST the base64 goes URL-encoded: '+', '/' and '=' never appear raw.
        let signed = append_key_signature(&PrivateKey::Rsa(key), payload);
        let sig = signed.rsplit("signature=").next().unwrap();
        assert!(!sig.contains(['+', '/', '=']), "{sig}");
        let not_a_key =
            RsaKey::from_pem("-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n")
                .unwrap_err();
        assert!(!not_a_key.contains("secret"), "{not_a_key}");
    }

    #[test]
    fn reserved_characters_are_encoded_before_signing() {
        let encoded = encode_params(&[("newClientOrderId", "a:b/c d".to_string())]);
        assert_eq!(encoded, "newClientOrderId=a%3Ab%2Fc+d");
    }
}
