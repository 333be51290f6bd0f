//! JSON Web Key Sets (RFC 7517 §5) holding the RS256 keys that sign OIDC-flavour Confidential
//! Space tokens, and [`JwksCache`], which refreshes them through a caller-supplied fetch at a
//! bounded rate.
//!
//! Google publishes the set at
//! `https://www.googleapis.com/service_accounts/v1/metadata/jwk/signer@confidentialspace-sign.iam.gserviceaccount.com`
//! (discovered from `https://confidentialcomputing.googleapis.com/.well-known/openid-configuration`).
//! Nothing here touches the network: the node fetches and hands the document in.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

/// Largest JWKS document accepted, in bytes.
pub const MAX_JWKS_BYTES: usize = 64 << 10;

/// Most keys kept from one JWKS document.
pub const MAX_JWKS_KEYS: usize = 32;

/// Default minimum interval between two refetches of the JWKS ([`JwksCache`]), in seconds.
pub const DEFAULT_JWKS_REFETCH_INTERVAL_SECS: u64 = 60;

/// Accepted RSA modulus sizes, in bits (what `ring` verifies for RS256).
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// Why a JWKS document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The document exceeds [`MAX_JWKS_BYTES`].
    #[error("JWKS document is {len} bytes, limit {max}")]
    TooLarge {
        /// Length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The document is not a JSON object with a `keys` array.
    #[error("JWKS document is not valid JSON: {0}")]
    Json(String),
    /// More than [`MAX_JWKS_KEYS`] usable keys.
    #[error("JWKS holds more than {max} RS256 keys")]
    TooManyKeys {
        /// The limit.
        max: usize,
    },
    /// An RSA key is unusable (bad base64, size out of range, missing `kid`).
    #[error("JWKS key {index}: {what}")]
    BadKey {
        /// Position of the key in `keys`.
        index: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// Two keys share a `kid`.
    #[error("JWKS key {index}: duplicate kid")]
    DuplicateKid {
        /// Position of the second key in `keys`.
        index: usize,
    },
}

/// An RSA public key for RS256: big-endian modulus and exponent, no leading zeros.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublicKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

impl RsaPublicKey {
    /// A key from big-endian modulus and exponent (leading zero bytes are stripped). `None` if
    /// the modulus is not 2048..=8192 bits or the exponent is not in 3..2^33 and odd.
    pub fn from_components(n: &[u8], e: &[u8]) -> Option<Self> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        let bits = n.first().map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
        let e_ok = (1..=5).contains(&e.len())
            && e.last().is_some_and(|low| low & 1 == 1)
            && (e.len() > 1 || e.first().is_some_and(|&v| v >= 3))
            && (e.len() < 5 || e.first().is_some_and(|&v| v <= 1));
        (RSA_BITS.contains(&bits) && e_ok).then(|| RsaPublicKey { n: n.to_vec(), e: e.to_vec() })
    }

    /// The modulus, big-endian.
    pub fn modulus(&self) -> &[u8] {
        &self.n
    }

    /// The public exponent, big-endian.
    pub fn exponent(&self) -> &[u8] {
        &self.e
    }

    /// Whether `signature` is a valid RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature of
    /// `message` under this key.
    pub(crate) fn verify_rs256(&self, message: &[u8], signature_b64: &str) -> bool {
        let key = jsonwebtoken::DecodingKey::from_rsa_raw_components(&self.n, &self.e);
        jsonwebtoken::crypto::verify(signature_b64, message, &key, jsonwebtoken::Algorithm::RS256)
            .unwrap_or(false)
    }
}

impl fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaPublicKey({} bits)", self.n.len() * 8)
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

/// The RS256 keys of a JWKS document, by `kid`.
///
/// Keys that are not RSA, or are marked for another algorithm (`alg`) or use (`use`), are
/// skipped; a malformed RSA key refuses the whole document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Jwks {
    keys: BTreeMap<String, RsaPublicKey>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

impl Jwks {
    /// Parses a JWKS JSON document (`{"keys":[{"kty":"RSA","kid":..,"n":..,"e":..}, ..]}`).
    pub fn from_json(doc: &[u8]) -> Result<Self, JwksError> {
        if doc.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge { len: doc.len(), max: MAX_JWKS_BYTES });
        }
        let raw: RawJwks = serde_json::from_slice(doc).map_err(|e| JwksError::Json(e.to_string()))?;
        let mut jwks = Jwks::default();
        for (index, k) in raw.keys.into_iter().enumerate() {
            let rs256 = k.kty == "RSA"
                && k.alg.as_deref().is_none_or(|a| a == "RS256")
                && k.use_.as_deref().is_none_or(|u| u == "sig");
            if !rs256 {
                continue;
            }
            let bad = |what| JwksError::BadKey { index, what };
            let kid = k.kid.filter(|k| !k.is_empty()).ok_or(bad("missing kid"))?;
            let decode = |s: Option<String>| s.and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
            let n = decode(k.n).ok_or(bad("bad or missing n"))?;
            let e = decode(k.e).ok_or(bad("bad or missing e"))?;
            let key =
                RsaPublicKey::from_components(&n, &e).ok_or(bad("RSA key size or exponent out of range"))?;
            if jwks.keys.len() >= MAX_JWKS_KEYS {
                return Err(JwksError::TooManyKeys { max: MAX_JWKS_KEYS });
            }
            if jwks.keys.insert(kid, key).is_some() {
                return Err(JwksError::DuplicateKid { index });
            }
        }
        Ok(jwks)
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&RsaPublicKey> {
        self.keys.get(kid)
    }

    /// Whether a key with this `kid` is present.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The `kid`s held, sorted.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A [`Jwks`] plus a rate limit on refetching it when a token names an unknown `kid`.
///
/// Google rotates its signing keys, so a token may name a `kid` the node has not seen yet; but
/// an attacker can send tokens with random `kid`s, so a refetch happens at most once per
/// interval whatever the outcome. Pure: the caller passes `now` and the fetch.
#[derive(Debug, Clone)]
pub struct JwksCache {
    jwks: Jwks,
    last_fetch: Option<u64>,
    min_interval_secs: u64,
}

impl JwksCache {
    /// A cache starting from `initial` (possibly empty), refetching at most once per
    /// `min_interval_secs`. The first refetch is allowed at once.
    pub fn new(initial: Jwks, min_interval_secs: u64) -> Self {
        JwksCache { jwks: initial, last_fetch: None, min_interval_secs }
    }

    /// The keys currently held.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    /// Whether [`JwksCache::refetch`] would call its fetch at `now`. A clock that went backwards
    /// since the last fetch allows a refetch rather than blocking it until the clock catches up.
    pub fn can_refetch(&self, now: u64) -> bool {
        match self.last_fetch {
            None => true,
            Some(last) => now < last || now - last >= self.min_interval_secs,
        }
    }

    /// Calls `fetch` if the rate limit allows it at `now`, and installs the keys it returns.
    ///
    /// Returns `Ok(true)` if a set was fetched and installed, `Ok(false)` if rate-limited (or the
    /// fetched set was empty: the old one is kept), `Err` if `fetch` failed. Every attempt counts
    /// toward the rate limit, failed ones included.
    pub fn refetch<E>(&mut self, now: u64, fetch: impl FnOnce() -> Result<Jwks, E>) -> Result<bool, E> {
        if !self.can_refetch(now) {
            return Ok(false);
        }
        self.last_fetch = Some(now);
        let fresh = fetch()?;
        if fresh.is_empty() {
            return Ok(false);
        }
        self.jwks = fresh;
        Ok(true)
    }

    /// Records a refetch attempt at `now` if the rate limit allows one; returns whether it did.
    /// For callers whose fetch is asynchronous: call this, fetch, then [`JwksCache::install`].
    pub fn begin_refetch(&mut self, now: u64) -> bool {
        if !self.can_refetch(now) {
            return false;
        }
        self.last_fetch = Some(now);
        true
    }

    /// Installs a set fetched on the node's own schedule (a periodic refresh), counting it as a
    /// fetch at `now`. An empty set is ignored.
    pub fn install(&mut self, jwks: Jwks, now: u64) {
        self.last_fetch = Some(now);
        if !jwks.is_empty() {
            self.jwks = jwks;
        }
    }

    /// Makes sure `kid` is known: if it is not, refetches (rate limit permitting). Returns whether
    /// `kid` is known afterwards.
    pub fn ensure_kid<E>(
        &mut self,
        kid: &str,
        now: u64,
        fetch: impl FnOnce() -> Result<Jwks, E>,
    ) -> Result<bool, E> {
        if self.jwks.contains(kid) {
            return Ok(true);
        }
        self.refetch(now, fetch)?;
        Ok(self.jwks.contains(kid))
    }
}
