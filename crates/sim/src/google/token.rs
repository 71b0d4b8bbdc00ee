//! The simulated service account: its RSA key, its JSON key file, and RS256 JWT-bearer checks.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::signature::Verifier;
use rsa::RsaPrivateKey;
use serde_json::Value;
use sha2::Sha256;

/// The `client_email` of the simulated service account.
pub(super) const CLIENT_EMAIL: &str = "auditflow-sim@sim-project.iam.gserviceaccount.com";
/// The scope the audit API needs.
pub(crate) const AUDIT_SCOPE: &str = "https://apps-apis.google.com/a/feeds/compliance/audit/";
/// Scopes the simulated service account is authorized for (domain-wide delegation): the audit
/// API's, and those of the Vault API and Cloud Storage (served by `crate::vault`).
pub(super) const GRANTABLE_SCOPES: &[&str] = &[
    AUDIT_SCOPE,
    "https://www.googleapis.com/auth/ediscovery",
    "https://www.googleapis.com/auth/ediscovery.readonly",
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/devstorage.read_write",
    "https://www.googleapis.com/auth/devstorage.full_control",
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/cloud-platform.read-only",
];
/// Longest assertion lifetime Google accepts (`exp - iat`).
const MAX_ASSERTION_LIFETIME: i64 = 3600;
/// Allowed clock skew for `iat` in the future.
const IAT_SKEW: i64 = 300;

/// A service account whose key lives only in the simulator (and its key file).
pub(super) struct ServiceAccount {
    private_key: RsaPrivateKey,
    verifying_key: VerifyingKey<Sha256>,
    pub private_key_id: String,
    pub client_id: String,
}

/// What a token request got wrong, as the OAuth error code and Google's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GrantError {
    pub error: &'static str,
    pub description: String,
}

impl GrantError {
    fn grant(description: impl Into<String>) -> Self {
        GrantError {
            error: "invalid_grant",
            description: description.into(),
        }
    }
}

/// What a valid assertion must say.
pub(super) struct Expected<'a> {
    /// Token endpoint URLs accepted as `aud`; the first is named in the error.
    pub audiences: &'a [&'a str],
    /// The admin the service account acts as (`sub`, domain-wide delegation).
    pub subject: &'a str,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// The service account's key could not be made or written out.
#[derive(Debug, thiserror::Error)]
pub(super) enum AccountError {
    #[error("cannot generate the service-account key: {0}")]
    Generate(rsa::Error),
    #[error("cannot encode the service-account key: {0}")]
    Encode(rsa::pkcs8::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("{}: {source}", .path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl ServiceAccount {
    /// Generates a fresh RSA-2048 key.
    pub(super) fn generate() -> Result<Self, AccountError> {
        let private_key =
            RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(AccountError::Generate)?;
        let verifying_key = VerifyingKey::<Sha256>::new(private_key.to_public_key());
        let mut id = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut id);
        let client_id = format!("1{:020}", u64::from_be_bytes(id) % 10u64.pow(19));
        Ok(ServiceAccount {
            private_key,
            verifying_key,
            private_key_id: random_hex(20),
            client_id,
        })
    }

    /// The JSON key file a Google console would hand out for this account.
    pub(super) fn key_file_json(&self, token_uri: &str) -> Result<String, AccountError> {
        let pem = self
            .private_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(AccountError::Encode)?;
        let json = serde_json::json!({
            "type": "service_account",
            "project_id": "sim-project",
            "private_key_id": self.private_key_id,
            "private_key": pem.as_str(),
            "client_email": CLIENT_EMAIL,
            "client_id": self.client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{}",
                CLIENT_EMAIL.replace('@', "%40")
            ),
            "universe_domain": "googleapis.com",
        });
        Ok(serde_json::to_string_pretty(&json)?)
    }

    /// Checks an RS256 JWT-bearer assertion as Google's token endpoint does, at `now` (Unix s);
    /// returns the scopes granted (those requested that the account is authorized for).
    pub(super) fn verify_assertion(
        &self,
        jwt: &str,
        expected: &Expected<'_>,
        now: i64,
    ) -> Result<Vec<String>, GrantError> {
        let claims = self.signed_claims(jwt)?;
        check_claims(&claims, expected, now)?;
        granted_scopes(&claims)
    }

    /// The claim set of `jwt` once its form, algorithm, key id and signature are checked.
    fn signed_claims(&self, jwt: &str) -> Result<Value, GrantError> {
        let mut parts = jwt.trim().split('.');
        let (Some(h64), Some(c64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(GrantError::grant(
                "Invalid JWT: the assertion is not of the form header.claims.signature",
            ));
        };
        let header = decode_json_part(h64, "header")?;
        let claims = decode_json_part(c64, "claim set")?;
        let signature = URL_SAFE_NO_PAD
            .decode(s64)
            .map_err(|_| GrantError::grant("Invalid JWT Signature."))?;

        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(GrantError::grant(
                "Invalid JWT: the signing algorithm must be RS256",
            ));
        }
        if let Some(kid) = header.get("kid") {
            if kid.as_str() != Some(self.private_key_id.as_str()) {
                return Err(GrantError::grant("Invalid JWT Signature."));
            }
        }
        let signed = jwt
            .trim()
            .get(..h64.len() + 1 + c64.len())
            .ok_or_else(|| GrantError::grant("Invalid JWT Signature."))?;
        let signature = Signature::try_from(signature.as_slice())
            .map_err(|_| GrantError::grant("Invalid JWT Signature."))?;
        self.verifying_key
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| GrantError::grant("Invalid JWT Signature."))?;
        Ok(claims)
    }
}

/// The issuer, audience, lifetime and subject of a signed claim set, at `now` (Unix s).
fn check_claims(claims: &Value, expected: &Expected<'_>, now: i64) -> Result<(), GrantError> {
    let claim_str = |name: &str| claims.get(name).and_then(Value::as_str);
    if claim_str("iss") != Some(CLIENT_EMAIL) {
        return Err(GrantError::grant("Invalid grant: account not found"));
    }
    if !claim_str("aud").is_some_and(|aud| expected.audiences.contains(&aud)) {
        return Err(GrantError::grant(format!(
            "Invalid JWT: Failed audience check. The right audience is {}",
            expected.audiences.first().copied().unwrap_or_default()
        )));
    }
    let iat = claims.get("iat").and_then(Value::as_i64);
    let exp = claims.get("exp").and_then(Value::as_i64);
    let timely = match (iat, exp) {
        (Some(iat), Some(exp)) => {
            exp > now && exp > iat && exp - iat <= MAX_ASSERTION_LIFETIME && iat <= now + IAT_SKEW
        }
        _ => false,
    };
    if !timely {
        return Err(GrantError::grant(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    match claim_str("sub") {
        Some(sub) if sub.eq_ignore_ascii_case(expected.subject) => Ok(()),
        _ => Err(GrantError::grant("Invalid email or User ID")),
    }
}

/// The scopes requested (`scope`, space-separated) that the account is authorized for; none
/// requested or none authorized is `invalid_scope`.
fn granted_scopes(claims: &Value) -> Result<Vec<String>, GrantError> {
    let scopes = claims.get("scope").and_then(Value::as_str).unwrap_or("");
    if scopes.split_whitespace().next().is_none() {
        return Err(GrantError {
            error: "invalid_scope",
            description: "Invalid OAuth scope or ID token audience provided.".into(),
        });
    }
    let granted: Vec<String> = scopes
        .split_whitespace()
        .filter(|s| GRANTABLE_SCOPES.contains(s))
        .map(str::to_string)
        .collect();
    if granted.is_empty() {
        return Err(GrantError {
            error: "invalid_scope",
            description: format!(
                "The requested scopes include none this client is authorized for ({})",
                GRANTABLE_SCOPES.join(" ")
            ),
        });
    }
    Ok(granted)
}

fn decode_json_part(part: &str, what: &str) -> Result<Value, GrantError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| GrantError::grant(format!("Invalid JWT: the {what} is not base64url")))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| GrantError::grant(format!("Invalid JWT: the {what} is not JSON")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(GrantError::grant(format!(
            "Invalid JWT: the {what} is not a JSON object"
        )))
    }
}

/// A fresh opaque access token.
pub(super) fn new_access_token() -> String {
    let mut buf = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut buf);
    format!("ya29.sim.{}", URL_SAFE_NO_PAD.encode(buf))
}
