//! Shared setup of the benchmarks: running commands, test data, a GnuPG key made with `gpg`.
#![allow(dead_code, reason = "shared by every bench; each uses a part of it")]
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) type Res<T> = Result<T, String>;

/// Passphrase of the throwaway benchmark key.
pub(crate) const PASSPHRASE: &str = "bench passphrase";

/// Runs a command to completion; a failure carries its stderr.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Res<std::process::Output> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// Reaps `child` with `wait4`: its raw wait status and resource usage (peak RSS in KiB,
/// CPU times), which `std::process` does not give.
pub(crate) fn reap(child: std::process::Child) -> Res<(libc::c_int, libc::rusage)> {
    let pid = libc::pid_t::try_from(child.id()).map_err(|e| format!("pid: {e}"))?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is a plain C struct; zeroed is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if r == -1 && err.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return Err(format!("wait4({pid}): {err}"));
    }
    // Reaped above; dropping a std Child neither waits nor kills.
    drop(child);
    Ok((status, ru))
}

/// Flushes dirty pages, so setup writeback does not land on a timed run.
pub(crate) fn sync() -> Res<()> {
    run(&mut Command::new("sync"), "sync").map(|_| ())
}

pub(crate) fn path_str(p: &Path) -> Res<&str> {
    p.to_str()
        .ok_or_else(|| format!("non-UTF-8 path {}", p.display()))
}

/// Streaming SHA-256 of a file (the library's, as `auditflow verify` uses it).
pub(crate) fn sha256_file(path: &Path) -> Res<String> {
    auditflow::durable::sha256_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Random-ish mbox: headers and text lines mixed with incompressible runs (compresses ~2:1).
/// Different seeds give different files; seed 0 is the decrypt benchmark's file.
pub(crate) fn write_plaintext(path: &Path, len: u64, seed: u64) -> Res<()> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).map_err(|e| e.to_string())?);
    let mut state = 0x2545_f491_4f6c_dd1du64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut written = 0u64;
    let mut n = 0u64;
    let mut chunk = Vec::with_capacity(8192);
    while written < len {
        n += 1;
        chunk.clear();
        write!(
            chunk,
            "From sender{n}@example.invalid Mon Jan  1 00:00:00 2024\nFrom: Sender {n} \
             <sender{n}@example.invalid>\nTo: auditor@example.invalid\nSubject: Quarterly \
             report {n}\n\nPlease find the figures attached; the quick brown fox jumps over \
             the lazy dog.\n\n"
        )
        .map_err(|e| e.to_string())?;
        for _ in 0..256 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.extend_from_slice(&state.to_le_bytes());
        }
        chunk.extend_from_slice(b"\n\n");
        let take = chunk.len().min((len - written) as usize);
        out.write_all(&chunk[..take]).map_err(|e| e.to_string())?;
        written += take as u64;
    }
    out.flush().map_err(|e| e.to_string())
}

/// A non-interactive `gpg` in the throwaway home `home`.
pub(crate) fn gpg(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home)
        .args([
            "--batch",
            "--no-tty",
            "--quiet",
            "--pinentry-mode",
            "loopback",
        ])
        .args(args);
    c
}

/// `gpg --encrypt` of `plain` into `encrypted` to the key [`make_key`] made, with gpg's
/// defaults (what a user's own gpg would write).
pub(crate) fn gpg_encrypt(home: &Path, plain: &Path, encrypted: &Path) -> Res<Command> {
    Ok(gpg(
        home,
        &[
            "--trust-model",
            "always",
            "-r",
            "bench@bench.invalid",
            "--output",
            path_str(encrypted)?,
            "--encrypt",
            path_str(plain)?,
        ],
    ))
}

/// Makes an RSA-3072 key (encryption subkey, passphrase [`PASSPHRASE`], user
/// `bench@bench.invalid`) in `home` and exports the armored secret key to `work/key.asc`.
pub(crate) fn make_key(work: &Path, home: &Path) -> Res<PathBuf> {
    eprintln!("generating an RSA-3072 key ...");
    let params = format!(
        "Key-Type: RSA\nKey-Length: 3072\nKey-Usage: sign,cert\nSubkey-Type: RSA\n\
         Subkey-Length: 3072\nSubkey-Usage: encrypt\nName-Real: bench\n\
         Name-Email: bench@bench.invalid\nExpire-Date: 0\nPassphrase: {PASSPHRASE}\n%commit\n"
    );
    let params_path = work.join("params");
    fs::write(&params_path, params).map_err(|e| e.to_string())?;
    run(
        &mut gpg(home, &["--gen-key", path_str(&params_path)?]),
        "gpg --gen-key",
    )?;
    let key_path = work.join("key.asc");
    let key = run(
        &mut gpg(
            home,
            &[
                "--passphrase",
                PASSPHRASE,
                "--armor",
                "--export-secret-keys",
                "bench@bench.invalid",
            ],
        ),
        "gpg --export-secret-keys",
    )?;
    fs::write(&key_path, key.stdout).map_err(|e| e.to_string())?;
    Ok(key_path)
}

/// Serves `app` on a free loopback port from a thread and runtime of its own (the runner
/// under measurement is a separate process); returns the base URL.
pub(crate) fn serve_on_thread(app: axum::Router) -> Res<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("address: {e}"))?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    Ok(format!("http://{addr}"))
}
