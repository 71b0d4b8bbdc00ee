//! Three weeks of past export requests for the admin's domain, so that the list feed has the
//! history the real API shows (it lists 3 weeks of requests) and pages past `rel="next"`.
//!
//! Deterministic: the same requests (users, hours, outcomes) relative to the start time on
//! every run. Past requests are `DELETED` (their files gone) or `ERROR`, so no seeded entry
//! offers files to download; each day stays within the daily limit.
use chrono::{DateTime, NaiveTime, TimeDelta, Utc};

use super::export::{Export, ExportOptions, Package, Phase};
use super::Db;

/// Days of history: the list's default window.
const DAYS: i64 = 21;
const USERS: &[&str] = &["alice", "bob", "carol", "dave", "erin", "frank", "grace"];

/// A fixed pseudo-random sequence (SplitMix64), so that every run seeds the same history.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % below.max(1)
    }
}

/// Adds the history to `db` for `domain`, with ids below every id issued later.
pub(super) fn history(
    db: &mut Db,
    domain: &str,
    admin: &str,
    daily_limit: u32,
    now: DateTime<Utc>,
) {
    let mut seq = Sequence(0x5EED_0000_0000_0021);
    for days_ago in (1..=DAYS).rev() {
        // Midnight UTC of that day: every request of it lies within it, in the past.
        let date = (now - TimeDelta::days(days_ago)).date_naive();
        let day = date.and_time(NaiveTime::MIN).and_utc();
        let wanted = 4 + seq.next(9) as u32;
        let count = wanted.min(daily_limit);
        for n in 0..count {
            let minutes = i64::from(n) * 1_380 / i64::from(count.max(1)) + seq.next(40) as i64;
            let requested = day + TimeDelta::minutes(minutes);
            // (Requests of the oldest day may fall before the default window, as on the vendor.)
            let user = USERS[seq.next(USERS.len() as u64) as usize];
            let error = seq.next(10) == 0;
            let done = requested + TimeDelta::minutes(20 + seq.next(240) as i64);
            let export = Export {
                id: db.next_id,
                domain: domain.to_string(),
                user: user.to_string(),
                admin: admin.to_string(),
                requested,
                updated: if error {
                    done
                } else {
                    done + TimeDelta::days(1)
                },
                completed: Some(done),
                marked: None,
                options: ExportOptions {
                    begin: Some((requested - TimeDelta::days(365)).naive_utc()),
                    end: Some(requested.naive_utc()),
                    include_deleted: seq.next(2) == 0,
                    search_query: None,
                    package: if seq.next(4) == 0 {
                        Package::HeaderOnly
                    } else {
                        Package::FullMessage
                    },
                },
                polls: 0,
                phase: if error { Phase::Error } else { Phase::Deleted },
                deletes: if error { 0 } else { 2 },
                files: Vec::new(),
            };
            db.exports.insert(export.id, export);
            db.next_id += 1 + seq.next(97);
        }
        *db.daily.entry((domain.to_string(), date)).or_insert(0) += count;
    }
}
