//! The claims of a verified Confidential Space token against an app's [`Policy`] (`docs/api.md` §5:
//! `dbgstat`, `image_digest`, `hwmodel`, `swversion`, `support_attributes`, `env_override`,
//! `cmd_override`).
//!
//! Checked in this order, first failure wins: revoked, debug, image digest, hwmodel, swversion,
//! `STABLE`, env override, cmd override. Revocation is checked here too, so a caller that only
//! calls [`check_policy`] cannot serve a revoked app; a caller may still check it earlier to skip
//! verifying the evidence at all.
//!
//! Not checked, because [`Policy`] has no field for them yet: `restart_policy` and `args` (the
//! command the image itself runs). They are in [`CsClaims`] for the caller.

use crate::app::Policy;

use super::confidential_space::DBGSTAT_DISABLED;
use super::{shown, shown_opt, AttestationError, CsClaims};

/// The `support_attributes` value that marks a Confidential Space image still in support.
pub const STABLE: &str = "STABLE";

/// Most variable names listed in an env override refusal.
const MAX_NAMES_SHOWN: usize = 8;

/// Checks verified claims against `policy`. Empty allowlists allow nothing.
pub fn check_policy(claims: &CsClaims, policy: &Policy) -> Result<(), AttestationError> {
    if policy.revoked {
        return Err(AttestationError::Revoked);
    }
    if !policy.allow_debug && claims.dbgstat.as_deref() != Some(DBGSTAT_DISABLED) {
        return Err(AttestationError::DebugImage { dbgstat: shown_opt(claims.dbgstat.as_deref()) });
    }
    if !claims.image_digest.is_some_and(|d| policy.allowed_image_digests.contains(&d)) {
        let digest = claims.image_digest.map_or_else(|| String::from("<missing>"), |d| d.to_string());
        return Err(AttestationError::ImageNotAllowed { digest });
    }
    if !claims.hwmodel.as_ref().is_some_and(|h| policy.allowed_hwmodels.contains(h)) {
        return Err(AttestationError::HwmodelNotAllowed { hwmodel: shown_opt(claims.hwmodel.as_deref()) });
    }
    if let Some(min) = policy.min_swversion {
        check_swversion(&claims.swversion, min)?;
    }
    if policy.require_stable && !claims.support_attributes.iter().any(|a| a == STABLE) {
        return Err(AttestationError::MissingStable);
    }
    let refused: Vec<&str> = claims
        .env_override
        .keys()
        .map(String::as_str)
        .filter(|name| !policy.env_override.allows(name))
        .collect();
    if !refused.is_empty() {
        let mut names: Vec<String> = refused.iter().take(MAX_NAMES_SHOWN).map(|n| shown(n)).collect();
        if refused.len() > MAX_NAMES_SHOWN {
            names.push(format!("and {} more", refused.len() - MAX_NAMES_SHOWN));
        }
        return Err(AttestationError::EnvOverride { names: names.join(", ") });
    }
    if !policy.allow_cmd_override && !claims.cmd_override.is_empty() {
        return Err(AttestationError::CmdOverride { args: claims.cmd_override.len() });
    }
    Ok(())
}

/// Every listed `swversion` must be a decimal number `>= min`, and there must be at least one.
fn check_swversion(versions: &[String], min: u64) -> Result<(), AttestationError> {
    let ok = !versions.is_empty() && versions.iter().all(|v| v.parse::<u64>().is_ok_and(|v| v >= min));
    if ok {
        return Ok(());
    }
    let found = if versions.is_empty() { String::from("<missing>") } else { shown(&versions.join(",")) };
    Err(AttestationError::SwversionTooOld { found, min })
}
