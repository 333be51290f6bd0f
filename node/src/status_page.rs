//! A read-only status page for a person at `GET /`: the cluster, the committee and which peers
//! are connected, the key epoch, where key generation and reshares stand, and refusals by
//! reason. Server-rendered HTML with no script; everything on it is public (identifiers,
//! addresses, counts, error codes): no secret, no token, no client address.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::http::AppState;

/// Refusals kept for the page: the 20 most recent.
const RECENT: usize = 20;

/// Refusals since the start, by reason, and the most recent ones.
#[derive(Default)]
pub struct Refusals {
    inner: Mutex<RefusalsInner>,
}

/// One refusal: unix seconds, endpoint, code.
type Refusal = (u64, String, String);

#[derive(Default)]
struct RefusalsInner {
    by_reason: BTreeMap<String, u64>,
    /// Newest last.
    recent: VecDeque<Refusal>,
}

impl Refusals {
    /// Records a refusal of `endpoint` with `code` at `now`.
    pub fn record(&self, now: u64, endpoint: &str, code: &str) {
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *r.by_reason.entry(code.to_owned()).or_default() += 1;
        if r.recent.len() == RECENT {
            r.recent.pop_front();
        }
        r.recent.push_back((now, endpoint.to_owned(), code.to_owned()));
    }

    fn snapshot(&self) -> (BTreeMap<String, u64>, Vec<Refusal>) {
        let r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (r.by_reason.clone(), r.recent.iter().rev().cloned().collect())
    }
}

/// `s` with the five HTML-significant characters escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of unix seconds.
fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date of a day count from 1970-01-01 (H. Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn dkg_state(gauge: i64) -> &'static str {
    match gauge {
        0 => "waiting for peers",
        1 => "key generation running",
        2 => "keys active",
        3 => "recovering this node's share",
        4 => "stopped (a write failed or the store cannot be read; see the log)",
        _ => "retired (a reshare handed the keys to a committee without this node)",
    }
}

/// The page, rendered from the node's state at `now`.
pub fn render(s: &AppState, now: u64) -> String {
    let status = s.shared.status();
    let epoch = s.shared.active().map(|k| k.epoch);
    let connected = s.shared.connected.read().map(|c| c.clone()).unwrap_or_default();
    let me = s.shared.me();
    let membership = s.shared.membership.read().map(|m| m.clone()).ok();
    let reshare = s.reshares.status().ok();
    let (by_reason, recent) = s.metrics.refusals.snapshot();
    let evidence = s.peer_gate.report(now);

    let mut h = String::with_capacity(8 << 10);
    let title = match me {
        Some(i) => format!("KMS node {i}"),
        None => "KMS node (not a member)".to_string(),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}.ok{{color:#070}}.bad{{color:#a00}}</style>\
         </head><body>\n<h1 id=\"title\">{title}</h1>\n<table id=\"node\">"
    );
    let row = |h: &mut String, id: &str, k: &str, v: &str| {
        let _ = write!(h, "<tr><th>{k}</th><td id=\"{id}\">{v}</td></tr>");
    };
    row(&mut h, "peer-id", "peer id", &esc(s.shared.peer_id()));
    if let Some(m) = &membership {
        row(&mut h, "cluster-id", "cluster id", &m.cluster_id.to_string());
        row(&mut h, "threshold", "threshold", &format!("{} of {}", m.threshold, m.members.len()));
    }
    row(&mut h, "epoch", "key epoch", &epoch.map_or("none yet".into(), |e| e.to_string()));
    let state_class = if status.gauge() == 2 { "ok" } else { "bad" };
    row(
        &mut h,
        "dkg-state",
        "keys",
        &format!("<span class=\"{state_class}\">{}</span>", dkg_state(status.gauge())),
    );
    if let Some(r) = &reshare {
        let progress = r.progress.as_deref().map(|p| format!(" — {}", esc(p))).unwrap_or_default();
        row(&mut h, "reshare-state", "roster changes", &format!("{}{progress}", esc(&r.state)));
    }
    row(&mut h, "time", "page made", &format!("{} UTC", utc(now)));
    h.push_str("</table>\n<h2>Committee</h2>\n<table id=\"committee\"><tr><th>index</th><th>peer id</th><th>HTTP</th><th>p2p</th><th>connected</th><th>evidence</th></tr>");
    for e in membership.iter().flat_map(|m| m.members.iter()) {
        let link = if me == Some(e.index) {
            "<span class=\"ok\">this node</span>"
        } else if connected.contains(&e.index) {
            "<span class=\"ok\">yes</span>"
        } else {
            "<span class=\"bad\">no</span>"
        };
        // The peer's evidence as this node judged it (`GET /v1/attestation/peers`).
        let judged = evidence.peers.iter().find(|p| p.peer_id == e.peer_id);
        let proof = match judged {
            _ if me == Some(e.index) => String::new(),
            _ if !evidence.required => "not required".into(),
            Some(p) if p.state == "passed" => {
                format!("<span class=\"ok\">passes: {}</span>", esc(p.workload.as_deref().unwrap_or("")))
            }
            Some(p) => format!(
                "<span class=\"bad\">{}: {}</span>",
                esc(&p.state),
                esc(p.reason.as_deref().unwrap_or(""))
            ),
            None => "<span class=\"bad\">not asked yet</span>".into(),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{link}</td><td>{proof}</td></tr>",
            e.index,
            esc(&e.peer_id),
            esc(&e.http_url),
            esc(&e.p2p_addr)
        );
    }
    h.push_str("</table>\n<h2>Refusals since start, by reason</h2>\n<table id=\"refusals\"><tr><th>code</th><th>count</th></tr>");
    for (code, n) in &by_reason {
        let _ = write!(h, "<tr><td>{}</td><td>{n}</td></tr>", esc(code));
    }
    if by_reason.is_empty() {
        h.push_str("<tr><td colspan=\"2\">none</td></tr>");
    }
    h.push_str("</table>\n<h2>Recent refusals</h2>\n<table id=\"recent\"><tr><th>time (UTC)</th><th>endpoint</th><th>code</th></tr>");
    for (t, endpoint, code) in &recent {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", utc(*t), esc(endpoint), esc(code));
    }
    h.push_str(
        "</table>\n<p>Machine-readable: <a href=\"v1/ready\">/v1/ready</a>, <a href=\"v1/cluster\">/v1/cluster</a>, <a href=\"v1/attestation\">/v1/attestation</a>, <a href=\"v1/attestation/peers\">/v1/attestation/peers</a>, \
         <a href=\"v1/reshare\">/v1/reshare</a>, <a href=\"metrics\">/metrics</a>.</p>\n</body></html>\n",
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped_and_times_are_utc() {
        assert_eq!(esc("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
        // Against `date -u -d @N '+%F %T'`.
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_868_799), "2000-02-29 23:59:59");
        assert_eq!(utc(1_796_317_200), "2026-12-03 17:00:00");
    }

    #[test]
    fn only_the_most_recent_refusals_are_kept() {
        let r = Refusals::default();
        for i in 0..25u64 {
            r.record(i, "/v1/keys", if i % 2 == 0 { "rate_limited" } else { "request_expired" });
        }
        let (by_reason, recent) = r.snapshot();
        assert_eq!(by_reason.get("rate_limited"), Some(&13));
        assert_eq!(by_reason.get("request_expired"), Some(&12));
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].0, 24, "newest first");
    }
}
