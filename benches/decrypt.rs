//! Benchmark: `decrypt_file` against `gpg --decrypt` on two 256 MiB GnuPG messages (wall, CPU, peak RSS).
//!
//! Run with `cargo bench --bench decrypt` (release). Two corpora, both generated here: a
//! near-incompressible one and mbox text that compresses about 8:1 (what real exports hold),
//! each encrypted with gpg's defaults (ZLIB) to an RSA-3072 key. `AUDITFLOW_BENCH_MIB=1024` sets
//! the plaintext size, `AUDITFLOW_BENCH_ROUNDS` the rounds (default 3, auditflow and gpg in turn),
//! `AUDITFLOW_BENCH_CORPUS=text` (or `near`) runs one corpus only. Needs `gpg` and `/usr/bin/time`. Each decryptor runs as a child process under
//! `/usr/bin/time -v`: this binary re-executes itself with `--decrypt-one KEY IN OUT` for
//! auditflow. gpg's figure is the `gpg` process only (its agent does the RSA step).
use std::fs::{self, File};
use std::io::{BufWriter, Write};
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
    // Writes the text corpus only (to profile by hand): `--write-text PATH MIB`.
    if let Some(i) = args.iter().position(|a| a == "--write-text") {
        let written = match (args.get(i + 1), args.get(i + 2).map(|m| m.parse::<u64>())) {
            (Some(path), Some(Ok(mib))) => write_text_mbox(Path::new(path), mib << 20),
            _ => Err("usage: --write-text PATH MIB".to_string()),
        };
        if let Err(e) = written {
            eprintln!("{e}");
            std::process::exit(1);
        }
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

/// A plaintext corpus: how it is made and what it stands for.
#[derive(Clone, Copy)]
enum Corpus {
    /// Headers mixed with incompressible runs (compresses about 1.1:1 with gpg's ZLIB).
    Random,
    /// mbox text: headers, plain and quoted-printable bodies, quotes (about 8:1).
    Text,
}

impl Corpus {
    fn name(self) -> &'static str {
        match self {
            Corpus::Random => "near-incompressible",
            Corpus::Text => "text mbox",
        }
    }

    fn write(self, path: &Path, len: u64) -> Res<()> {
        match self {
            Corpus::Random => write_plaintext(path, len, 0),
            Corpus::Text => write_text_mbox(path, len),
        }
    }
}

/// Common words, most frequent first; [`Words::pick`] favours the start of the list.
const WORDS: &str =
    "the to and of a in for is on that by this with you it not or be are from at as your all \
have new more an was we will can us about if my has but our one other do no information \
time they he up may what which their news out use any there see only so his when \
contact here business who also now help get view online first been would how were me \
services some these click its like service than find price date back top people had \
list name just over state year day into email two health world next used go work last \
most products music buy data make them should product system post her city add policy \
number such please available copyright support message after best software then jan \
good video well where info rights public books high school through each links she \
review years order very privacy book items company read group need many user said does \
set under general research university january mail full map reviews program life know \
games way days management part could great united hotel real item international center \
must store travel comments made development report off member details line terms before \
hotels did send right type because local those using results office education national \
car design take posted internet address community within states area want phone \
shipping reserved subject between forum family long based code show even black check \
special prices website index being women much sign file link open today technology \
south case project same pages version section own found sports house related security \
both county american photo game members power while care network down computer systems \
three total place end following download him without per access think north resources \
current posts big media law control water history pictures size art personal since \
including guide shop directory board location change white text small rating rate \
government children during return students shopping account times sites level digital \
profile previous form events love old john main call hours image department title \
description non insurance another why shall property class still money quality every \
listing content country private little visit save tools low reply customer december \
compare movies include college value article york man card jobs provide food source \
author different press learn sale around print course job canada process room stock \
training too credit point join science men categories advanced west sales look english \
left team estate box conditions select windows photos thread week category note live \
large gallery table register however june october november market library really action \
start series model features air industry plan human provided yes required second hot \
accessories cost movie forums march september better say questions july going medical \
test friend come dec server study application cart";

/// The signature and disclaimer every message of the corpus ends with.
const FOOTER: &[u8] = b"\n-- \nUser, Example Corp, 1 Example Street, Springfield\n\n\
CONFIDENTIALITY NOTICE: This e-mail message, including any attachments, is for the sole use \
of the intended recipient(s) and may contain confidential and privileged information. Any \
unauthorized review, use, disclosure or distribution is prohibited. If you are not the \
intended recipient, please contact the sender by reply e-mail and destroy all copies of the \
original message.\n\n";

/// A xorshift word source with a skewed (roughly Zipf-like) choice, like natural text.
struct Words {
    state: u64,
    list: Vec<&'static str>,
}

impl Words {
    fn new(seed: u64) -> Words {
        Words {
            state: seed,
            list: WORDS.split_whitespace().collect(),
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn pick(&mut self) -> &'static str {
        let (a, b) = (self.next() % 1000, self.next() % 1000);
        let i = (a * b / 1000 * a / 1000) as usize * self.list.len() / 1000;
        self.list[i.min(self.list.len() - 1)]
    }

    /// A body line of about `width` characters.
    fn line(&mut self, out: &mut Vec<u8>, width: usize) {
        let start = out.len();
        while out.len() - start < width {
            if out.len() > start {
                out.push(b' ');
            }
            out.extend_from_slice(self.pick().as_bytes());
        }
    }
}

/// mbox text (compresses about 8:1 with gpg's default ZLIB): messages with full headers,
/// plain or quoted-printable bodies of common words, and quoted replies.
fn write_text_mbox(path: &Path, len: u64) -> Res<()> {
    let file = File::create(path).map_err(|e| e.to_string())?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut words = Words::new(0x9e37_79b9_7f4a_7c15);
    let mut written = 0u64;
    let mut msg = Vec::with_capacity(64 * 1024);
    let mut quoted: Vec<Vec<u8>> = Vec::new();
    let mut n = 0u64;
    while written < len {
        n += 1;
        msg.clear();
        let (from, to) = (words.next() % 5000, words.next() % 5000);
        let id = words.next();
        let qp = n.is_multiple_of(3);
        write!(
            msg,
            "From user{from}@example.com Mon Jan {day:2} {h:02}:{m:02}:{s:02} 2024\n\
             Return-Path: <user{from}@example.com>\n\
             Received: from mail.example.com (mail.example.com [192.0.2.{ip}])\n        \
             by mx.example.org with ESMTPS id {id:016x}\n        \
             for <user{to}@example.org>; Mon, {day} Jan 2024 {h:02}:{m:02}:{s:02} +0000\n\
             From: User {from} <user{from}@example.com>\nTo: User {to} <user{to}@example.org>\n\
             Subject: Re: {w1} {w2} {w3}\nDate: Mon, {day} Jan 2024 {h:02}:{m:02}:{s:02} +0000\n\
             Message-ID: <{id:016x}@mail.example.com>\nMIME-Version: 1.0\n\
             Content-Type: text/plain; charset=\"utf-8\"\nContent-Transfer-Encoding: {cte}\n\
             X-Gmail-Labels: Inbox,Important\n\n",
            day = 1 + n % 28,
            h = n % 24,
            m = (n / 24) % 60,
            s = (n / 7) % 60,
            ip = id % 250,
            w1 = words.pick(),
            w2 = words.pick(),
            w3 = words.pick(),
            cte = if qp { "quoted-printable" } else { "7bit" },
        )
        .map_err(|e| e.to_string())?;
        for _ in 0..(4 + words.next() % 24) {
            let start = msg.len();
            let width = 60 + (words.next() % 14) as usize;
            words.line(&mut msg, width);
            if qp && words.next().is_multiple_of(4) {
                msg.extend_from_slice(b" =E2=80=99s=");
            }
            msg.push(b'\n');
            if quoted.len() < 60 {
                quoted.push(msg[start..].to_vec());
            }
        }
        msg.extend_from_slice(b"\nOn Monday, User wrote:\n");
        for line in quoted.iter().take(30) {
            msg.extend_from_slice(b"> ");
            msg.extend_from_slice(line);
        }
        if n.is_multiple_of(100) {
            quoted.clear();
        }
        msg.extend_from_slice(FOOTER);
        let take = msg.len().min((len - written) as usize);
        out.write_all(&msg[..take]).map_err(|e| e.to_string())?;
        written += take as u64;
    }
    out.flush().map_err(|e| e.to_string())
}

/// One round of both decryptors on one corpus.
struct Round {
    af: Measure,
    gpg: Measure,
}

/// The median of the rounds' values.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn env_u64(name: &str, default: u64) -> Res<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().map_err(|e| format!("{name}: {e}")))
        .transpose()
        .map(|v| v.unwrap_or(default))
}

fn bench() -> Res<()> {
    let mib = env_u64("AUDITFLOW_BENCH_MIB", 256)?;
    let rounds = env_u64("AUDITFLOW_BENCH_ROUNDS", 3)?.max(1);
    let only = std::env::var("AUDITFLOW_BENCH_CORPUS").unwrap_or_default();
    if !Path::new("/usr/bin/time").exists() {
        return Err("/usr/bin/time is needed (apt-get install time)".into());
    }
    let work = tempfile::Builder::new()
        .prefix("afbench")
        .tempdir_in("/tmp")
        .map_err(|e| e.to_string())?;
    let home = work.path().join("g");
    fs::create_dir(&home).map_err(|e| e.to_string())?;
    let result = (|| -> Res<()> {
        let key_path = make_key(work.path(), &home)?;
        let mut reports = Vec::new();
        for corpus in [Corpus::Random, Corpus::Text] {
            if !only.is_empty() && !corpus.name().starts_with(only.as_str()) {
                continue;
            }
            let setup = Setup {
                work: work.path(),
                home: &home,
                key: &key_path,
                mib,
            };
            let (enc_size, rows) = setup.run_corpus(corpus, rounds)?;
            reports.push((corpus, enc_size, rows));
        }
        for (corpus, enc_size, rows) in &reports {
            print_corpus(*corpus, mib, *enc_size, rows);
        }
        println!(
            "auditflow: one process = key load (one S2K unlock, once per run) + decrypt_file \
             (decompression on a second thread, hashing and writing on a third; the output is \
             fsynced); gpg: the gpg process only (RSA and S2K run in gpg-agent, which caches \
             the unlocked key after the first run; its output is not fsynced)"
        );
        Ok(())
    })();
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", &home)
        .args(["--kill", "all"])
        .status();
    result
}

/// What every corpus run needs: the work directory, the gpg home and key, the size.
struct Setup<'a> {
    work: &'a Path,
    home: &'a Path,
    key: &'a Path,
    mib: u64,
}

impl Setup<'_> {
    /// Writes and encrypts the corpus, then times both decryptors `rounds` times, alternating.
    fn run_corpus(&self, corpus: Corpus, rounds: u64) -> Res<(u64, Vec<Round>)> {
        eprintln!(
            "{}: writing {} MiB of plaintext and encrypting it (gpg defaults) ...",
            corpus.name(),
            self.mib
        );
        let plain = self.work.join("plain.mbox");
        corpus.write(&plain, self.mib << 20)?;
        let expected = sha256_file(&plain)?;
        let encrypted = self.work.join("export.gpg");
        let _ = fs::remove_file(&encrypted);
        run(
            &mut common::gpg_encrypt(self.home, &plain, &encrypted)?,
            "gpg --encrypt",
        )?;
        fs::remove_file(&plain).map_err(|e| e.to_string())?;
        let enc_size = fs::metadata(&encrypted).map_err(|e| e.to_string())?.len();
        // Warm the page cache and the agent, so neither side pays for it.
        sha256_file(&encrypted)?;
        let mut rows = Vec::new();
        for _ in 0..rounds {
            rows.push(self.round(&encrypted, &expected)?);
        }
        Ok((enc_size, rows))
    }

    fn round(&self, encrypted: &Path, expected: &str) -> Res<Round> {
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let out_af = self.work.join("af.mbox");
        let out_gpg = self.work.join("gpg.mbox");
        let gpg_bin = which_gpg()?;
        let _ = fs::remove_file(&out_af);
        let _ = fs::remove_file(&out_gpg);
        // Start each run with no dirty pages queued (auditflow fsyncs its output, gpg does
        // not; neither should wait for the other's or the setup's writeback).
        sync()?;
        let af = timed(
            &me,
            &[
                "--decrypt-one",
                path_str(self.key)?,
                path_str(encrypted)?,
                path_str(&out_af)?,
            ],
            &[],
            "auditflow decrypt_file",
        )?;
        sync()?;
        let gpg = timed(
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
                path_str(encrypted)?,
            ],
            &[("GNUPGHOME", self.home)],
            "gpg --decrypt",
        )?;
        for (name, out) in [("auditflow", &out_af), ("gpg", &out_gpg)] {
            if sha256_file(out)? != expected {
                return Err(format!("{name} produced a different plaintext"));
            }
        }
        let _ = fs::remove_file(&out_af);
        let _ = fs::remove_file(&out_gpg);
        Ok(Round { af, gpg })
    }
}

fn print_corpus(corpus: Corpus, mib: u64, enc_size: u64, rows: &[Round]) {
    println!();
    println!(
        "decrypt bench, {} corpus: {mib} MiB plaintext, {:.1} MiB encrypted ({:.1}:1; RSA-3072, \
         gpg defaults: SEIPD v1 + MDC, ZLIB, partial lengths)",
        corpus.name(),
        enc_size as f64 / (1 << 20) as f64,
        (mib << 20) as f64 / enc_size as f64
    );
    println!(
        "{:<6} {:>24} {:>9} {:>7} {:>20} {:>17}",
        "round", "auditflow wall (key+dec)", "gpg wall", "ratio", "CPU auditflow / gpg", "peak RSS"
    );
    for (i, r) in rows.iter().enumerate() {
        println!(
            "{:<6} {:>7.2} s ({:.2} + {:.2}) {:>7.2} s {:>6.2}x {:>9.2} / {:.2} s {:>6.1} / {:.1} MiB",
            i + 1,
            r.af.wall_s,
            r.af.load_s,
            r.af.decrypt_s,
            r.gpg.wall_s,
            r.af.wall_s / r.gpg.wall_s,
            r.af.cpu_s,
            r.gpg.cpu_s,
            r.af.max_rss_kib as f64 / 1024.0,
            r.gpg.max_rss_kib as f64 / 1024.0
        );
    }
    let med = |f: fn(&Round) -> f64| median(rows.iter().map(f).collect());
    println!(
        "{:<6} {:>7.2} s {:>16} {:>7.2} s {:>6.2}x {:>9.2} / {:.2} s {:>6.1} / {:.1} MiB",
        "median",
        med(|r| r.af.wall_s),
        "",
        med(|r| r.gpg.wall_s),
        med(|r| r.af.wall_s / r.gpg.wall_s),
        med(|r| r.af.cpu_s),
        med(|r| r.gpg.cpu_s),
        med(|r| r.af.max_rss_kib as f64) / 1024.0,
        med(|r| r.gpg.max_rss_kib as f64) / 1024.0
    );
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
