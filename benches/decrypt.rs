//! Benchmark: `decrypt_file` against `gpg --decrypt` on a 256 MiB GnuPG message (wall time, peak RSS).
//!
//! Run with `cargo bench --bench decrypt` (release). `AUDITFLOW_BENCH_MIB=1024` sets the
//! plaintext size. Needs `gpg` and `/usr/bin/time`. Each decryptor runs as a child process under
//! `/usr/bin/time -v`: this binary re-executes itself with `--decrypt-one KEY IN OUT` for
//! auditflow. gpg's figure is the `gpg` process only (its agent does the RSA step).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use auditflow::steps::decrypt::{decrypt_file, DecryptionKey};

mod common;
use common::{make_key, path_str, run, sha256_file, sync, write_plaintext, Res, PASSPHRASE};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--decrypt-one") {
        child(&args[i + 1..]);
        return;
    }
    if let Err(e) = bench() {
        eprintln!("decrypt bench: {e}");
        std::process::exit(1);
    }
}

/// Child mode: load the key and decrypt one file, printing the result.
fn child(args: &[String]) {
    let [key, input, output] = args else {
        eprintln!("usage: --decrypt-one KEY INPUT OUTPUT");
        std::process::exit(2);
    };
    let started = Instant::now();
    let key = match DecryptionKey::load(Path::new(key), Some(PASSPHRASE)) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let loaded = Instant::now();
    match decrypt_file(&key, Path::new(input), Path::new(output)) {
        Ok(_) => println!(
            "load_s={:.3} decrypt_s={:.3}",
            (loaded - started).as_secs_f64(),
            loaded.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

struct Measure {
    wall_s: f64,
    /// For auditflow: the key load (S2K unlock) and the `decrypt_file` call, timed inside.
    load_s: f64,
    decrypt_s: f64,
    cpu_s: f64,
    max_rss_kib: u64,
}

/// Runs `program args` under `/usr/bin/time -v` and parses wall time and peak RSS.
fn timed(program: &Path, args: &[&str], env: &[(&str, &Path)], what: &str) -> Res<Measure> {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v").arg(program).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd, what)?;
    let text = String::from_utf8_lossy(&out.stderr);
    let mut wall_s = None;
    let mut max_rss_kib = None;
    let mut cpu_s = 0.0;
    let (mut load_s, mut decrypt_s) = (0.0, 0.0);
    for field in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Some(v) = field.strip_prefix("load_s=") {
            load_s = v.parse::<f64>().map_err(|e| format!("{v}: {e}"))?;
        }
        if let Some(v) = field.strip_prefix("decrypt_s=") {
            decrypt_s = v.parse::<f64>().map_err(|e| format!("{v}: {e}"))?;
        }
    }
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Elapsed (wall clock) time (h:mm:ss or m:ss): ") {
            let mut secs = 0.0;
            for part in v.split(':') {
                secs = secs * 60.0 + part.parse::<f64>().map_err(|e| format!("{v}: {e}"))?;
            }
            wall_s = Some(secs);
        }
        for prefix in ["User time (seconds): ", "System time (seconds): "] {
            if let Some(v) = line.strip_prefix(prefix) {
                cpu_s += v.parse::<f64>().map_err(|e| format!("{v}: {e}"))?;
            }
        }
        if let Some(v) = line.strip_prefix("Maximum resident set size (kbytes): ") {
            max_rss_kib = Some(v.parse::<u64>().map_err(|e| format!("{v}: {e}"))?);
        }
    }
    match (wall_s, max_rss_kib) {
        (Some(wall_s), Some(max_rss_kib)) => Ok(Measure {
            wall_s,
            load_s,
            decrypt_s,
            cpu_s,
            max_rss_kib,
        }),
        _ => Err(format!(
            "{what}: cannot parse /usr/bin/time output:\n{text}"
        )),
    }
}

fn bench() -> Res<()> {
    let mib: u64 = std::env::var("AUDITFLOW_BENCH_MIB")
        .ok()
        .map(|v| v.parse().map_err(|e| format!("AUDITFLOW_BENCH_MIB: {e}")))
        .transpose()?
        .unwrap_or(256);
    if !Path::new("/usr/bin/time").exists() {
        return Err("/usr/bin/time is needed (apt-get install time)".into());
    }
    let work = tempfile::Builder::new()
        .prefix("afbench")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    let home = work.path().join("g");
    fs::create_dir(&home).map_err(|e| e.to_string())?;
    let gpg = |args: &[&str]| common::gpg(&home, args);
    let result = (|| -> Res<()> {
        let key_path = make_key(work.path(), &home)?;

        eprintln!("writing {mib} MiB of plaintext and encrypting it (gpg defaults) ...");
        let plain = work.path().join("plain.mbox");
        write_plaintext(&plain, mib << 20, 0)?;
        let expected = sha256_file(&plain)?;
        let encrypted = work.path().join("export.gpg");
        run(
            &mut gpg(&[
                "--trust-model",
                "always",
                "-r",
                "bench@bench.invalid",
                "--output",
                path_str(&encrypted)?,
                "--encrypt",
                path_str(&plain)?,
            ]),
            "gpg --encrypt",
        )?;
        fs::remove_file(&plain).map_err(|e| e.to_string())?;
        let enc_size = fs::metadata(&encrypted).map_err(|e| e.to_string())?.len();
        // Warm the page cache and the agent, so neither side pays for it.
        sha256_file(&encrypted)?;

        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let out_af = work.path().join("af.mbox");
        let out_gpg = work.path().join("gpg.mbox");
        let gpg_bin = which_gpg()?;
        let mut rows = Vec::new();
        for round in 1..=2 {
            let _ = fs::remove_file(&out_af);
            let _ = fs::remove_file(&out_gpg);
            // Start each run with no dirty pages queued (auditflow fsyncs its output, gpg does
            // not; neither should wait for the other's or the setup's writeback).
            sync()?;
            let af = timed(
                &me,
                &[
                    "--decrypt-one",
                    path_str(&key_path)?,
                    path_str(&encrypted)?,
                    path_str(&out_af)?,
                ],
                &[],
                "auditflow decrypt_file",
            )?;
            sync()?;
            let g = timed(
                &gpg_bin,
                &[
                    "--batch",
                    "--no-tty",
                    "--quiet",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase",
                    PASSPHRASE,
                    "--output",
                    path_str(&out_gpg)?,
                    "--decrypt",
                    path_str(&encrypted)?,
                ],
                &[("GNUPGHOME", &home)],
                "gpg --decrypt",
            )?;
            for (name, out) in [("auditflow", &out_af), ("gpg", &out_gpg)] {
                if sha256_file(out)? != expected {
                    return Err(format!("{name} produced a different plaintext"));
                }
            }
            rows.push((round, af, g));
        }
        println!();
        println!(
            "decrypt bench: {mib} MiB plaintext, {:.1} MiB encrypted (RSA-3072, gpg defaults: \
             SEIPD v1 + MDC, ZLIB, partial lengths)",
            enc_size as f64 / (1 << 20) as f64
        );
        println!(
            "{:<5} {:>24} {:>9} {:>20} {:>13}",
            "round", "auditflow wall (key+dec)", "gpg wall", "CPU auditflow / gpg", "peak RSS"
        );
        for (round, af, g) in rows {
            println!(
                "{:<5} {:>7.2} s ({:.2} + {:.2}) {:>7.2} s {:>9.2} / {:.2} s {:>5.1} / {:.1} MiB",
                round,
                af.wall_s,
                af.load_s,
                af.decrypt_s,
                g.wall_s,
                af.cpu_s,
                g.cpu_s,
                af.max_rss_kib as f64 / 1024.0,
                g.max_rss_kib as f64 / 1024.0
            );
        }
        println!(
            "auditflow: one process = key load (one S2K unlock, once per run) + decrypt_file \
             (decompression on a second thread, hashing and writing on a third); gpg: the gpg process only (RSA and S2K \
             run in gpg-agent, which caches the unlocked key after round 1)"
        );
        Ok(())
    })();
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &home)
        .args(["--kill", "all"])
        .status();
    result
}

fn which_gpg() -> Res<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "command -v gpg"])
        .output()
        .map_err(|e| e.to_string())?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if path.is_empty() {
        return Err("gpg is needed for this benchmark".into());
    }
    Ok(PathBuf::from(path))
}
