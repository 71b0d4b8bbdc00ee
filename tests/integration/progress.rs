//! Operator output (issue 11): loops labelled by item, MailStore progress only with `-v`, no
//! progress bars outside a terminal, and a simulator that stops promptly on SIGTERM / Ctrl-C.
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::{command, Dir};

/// Starts `auditflow sim`, waits for its banner, returns the child and its Mimecast address.
fn start_sim(dir: &Dir) -> (Child, String) {
    let mut child = command(&["sim"], dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("auditflow sim starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout);
    let mut mimecast = None;
    let mut line = String::new();
    while lines.read_line(&mut line).unwrap_or(0) > 0 {
        if let Some(u) = line.trim().strip_prefix("mimecast") {
            mimecast = Some(u.trim().to_string());
        }
        if line.starts_with("Point the shipped workflows") {
            break;
        }
        line.clear();
    }
    // Keep draining stdout (the closing statistics) so the simulator never blocks on it.
    std::thread::spawn(move || {
        let _ = lines.read_to_end(&mut Vec::new());
    });
    (child, mimecast.expect("the banner names the Mimecast address"))
}

/// Sends `signal` to the simulator while a client holds an idle connection open, and
/// returns how long it took to exit and its exit code.
fn stop_sim_with(signal: i32) -> (Duration, Option<i32>) {
    let dir = Dir::new();
    let (mut child, url) = start_sim(&dir);
    let addr = url.trim_start_matches("http://").to_string();
    // An idle keep-alive connection, as a workflow's HTTP client leaves behind.
    let _idle = std::net::TcpStream::connect(&addr).expect("connect to the simulator");
    std::thread::sleep(Duration::from_millis(100));
    let pid = i32::try_from(child.id()).expect("pid fits");
    let sent = Instant::now();
    // SAFETY: kill(2) with our child's pid and a signal number has no memory effects.
    unsafe {
        libc::kill(pid, signal);
    }
    let deadline = sent + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait for the simulator") {
            return (sent.elapsed(), status.code());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (sent.elapsed(), None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_simulator_stops_promptly_on_sigterm() {
    let (took, code) = stop_sim_with(libc::SIGTERM);
    assert_eq!(code, Some(0), "exit code after SIGTERM (took {took:?})");
    assert!(took < Duration::from_millis(800), "took {took:?}");
}

#[test]
fn the_simulator_stops_promptly_on_ctrl_c() {
    let (took, code) = stop_sim_with(libc::SIGINT);
    assert_eq!(code, Some(0), "exit code after SIGINT (took {took:?})");
    assert!(took < Duration::from_millis(800), "took {took:?}");
}
