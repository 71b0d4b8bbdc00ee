//! MailStore's user directory and archive statistics: `GetUsers`, `GetUserInfo`,
//! `GetFolderStatistics` and `GetWorkerResults`, answered from a fixed, deterministic set.
//!
//! The shapes follow the Python wrapper's tutorial: `GetUsers` items carry `userName`;
//! `GetUserInfo` carries `emailAddresses`, `privileges` (with `admin` for administrators) and
//! `privilegesOnFolders` (`folder`, `privileges`).
use chrono::{NaiveDate, NaiveDateTime, TimeDelta};
use serde_json::{json, Value};

use super::{failed, succeeded, Args};

/// A simulated MailStore user: user name, full name, admin or not.
const USERS: &[(&str, &str, bool)] = &[
    ("admin", "Administrator", true),
    ("jane.roe", "Jane Roe", false),
    ("john.doe", "John Doe", false),
    ("quinn", "Quinn Archer", false),
];
const MAIL_DOMAIN: &str = "example.com";
/// When the simulated archiving profile first ran (all worker results are on fixed days).
const FIRST_RUN: &str = "2026-01-05 02:00";

/// `GetUsers`: every user, as the wrapper iterates them.
pub(super) fn get_users() -> Value {
    let users: Vec<Value> = USERS
        .iter()
        .map(|(name, full, _)| {
            json!({ "userName": name, "fullName": full, "distinguishedName": null })
        })
        .collect();
    succeeded(json!(users))
}

/// `GetUserInfo(userName)`: one user's addresses and privileges.
pub(super) fn get_user_info(args: &Args) -> Value {
    let name = match args.required("userName") {
        Ok(n) => n,
        Err(e) => return e,
    };
    let Some((user, full, admin)) = USERS.iter().find(|(u, _, _)| u.eq_ignore_ascii_case(name))
    else {
        return failed(
            &format!("User '{name}' does not exist."),
            "Use GetUsers to list the MailStore users.",
        );
    };
    let privileges = if *admin {
        json!(["admin"])
    } else {
        json!(["login", "changePassword"])
    };
    // Administrators read every archive; users read their own.
    let folders: Vec<Value> = USERS
        .iter()
        .filter(|(u, _, a)| !a && (*admin || u == user))
        .map(|(u, _, _)| json!({ "folder": u, "privileges": ["read"] }))
        .collect();
    succeeded(json!({
        "userName": user,
        "fullName": full,
        "distinguishedName": null,
        "authentication": "integrated",
        "emailAddresses": [format!("{user}@{MAIL_DOMAIN}")],
        "pop3UserNames": [],
        "privileges": privileges,
        "privilegesOnFolders": folders,
    }))
}

/// `GetFolderStatistics`: message count and size of each user archive.
pub(super) fn get_folder_statistics(args: &Args) -> Value {
    if let Err(e) = args.opt_i64("timeoutMSec") {
        return e;
    }
    let stats: Vec<Value> = USERS
        .iter()
        .enumerate()
        .filter(|(_, (_, _, admin))| !admin)
        .map(|(i, (user, _, _))| {
            let count = 1_249 + 311 * i as i64;
            json!({ "folder": user, "count": count, "size": count * 48_213 })
        })
        .collect();
    succeeded(json!(stats))
}

/// `GetWorkerResults(fromIncluding, toExcluding, timeZoneID, profileID, userName)`: one
/// archiving run per day and user within the range.
pub(super) fn get_worker_results(args: &Args) -> Value {
    let range = (|| {
        let from = date_arg(args, "fromIncluding")?;
        let to = date_arg(args, "toExcluding")?;
        args.required("timeZoneID")?;
        let profile = args.opt_i64("profileID")?;
        Ok::<_, Value>((
            from,
            to,
            profile,
            args.get("userName").filter(|u| !u.is_empty()),
        ))
    })();
    let (from, to, profile, user) = match range {
        Ok(r) => r,
        Err(e) => return e,
    };
    if profile.is_some_and(|p| p != 1) {
        return succeeded(json!([]));
    }
    let Ok(mut day) = NaiveDateTime::parse_from_str(FIRST_RUN, "%Y-%m-%d %H:%M") else {
        return succeeded(json!([]));
    };
    let mut results = Vec::new();
    let mut id = 1;
    while day < to && results.len() < 10_000 {
        for (i, (name, _, admin)) in USERS.iter().enumerate() {
            if *admin || user.is_some_and(|u| !u.eq_ignore_ascii_case(name)) {
                id += 1;
                continue;
            }
            let start = day + TimeDelta::minutes(3 * i as i64);
            if start >= from && start < to {
                results.push(worker_result(id, name, start, i as i64));
            }
            id += 1;
        }
        day += TimeDelta::days(1);
    }
    succeeded(json!(results))
}

fn worker_result(id: i64, user: &str, start: NaiveDateTime, n: i64) -> Value {
    let items = 5 + (id * 7 + n) % 40;
    json!({
        "id": id,
        "profileID": 1,
        "profileName": "Archive Exchange mailboxes",
        "userName": user,
        "machineName": super::MACHINE_NAME,
        "startTime": start.format("%Y-%m-%dT%H:%M:%S").to_string(),
        "completeTime": (start + TimeDelta::seconds(20 + items)).format("%Y-%m-%dT%H:%M:%S").to_string(),
        "result": "succeeded",
        "itemsArchived": items,
        "itemsPerformed": items,
    })
}

/// A date argument: `2026-01-31T00:00:00` (or a plain `2026-01-31`).
fn date_arg(args: &Args, name: &str) -> Result<NaiveDateTime, Value> {
    let raw = args.required(name)?.trim();
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| {
            NaiveDate::parse_from_str(raw, "%Y-%m-%d").map(|d| d.and_time(Default::default()))
        })
        .map_err(|_| {
            failed(
                &format!("Invalid argument '{name}'."),
                &format!("'{raw}' is not a date such as 2026-01-31T00:00:00."),
            )
        })
}
