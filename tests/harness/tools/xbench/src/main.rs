//! `xbench`: the measuring tool of `cargo xtask bench --xen`, built static on the host and shipped
//! to dom0 (and to the Linux baseline guest) in the harness payload.
//!
//! dom0 side (the same client for both guests):
//! - `first-answer HOST PORT PATH TIMEOUT_S -- CMD...`: runs CMD, then polls `GET PATH` every
//!   10 ms (a connect not answered in 100 ms is tried again); prints `cmd_s=` (CMD's own time) `after_cmd_s=` (CMD's end to the first HTTP answer).
//! - `put HOST PORT PATH BYTES` / `get HOST PORT PATH BYTES`: one bulk transfer; prints `mbps=`.
//! - `lat HOST PORT PATH N`: N GETs over one keep-alive connection; prints `p50_us= p99_us=`.
//! - `rps HOST PORT PATH CONNS SECONDS`: CONNS keep-alive clients for SECONDS; prints `rps=`.
//!
//! Linux guest side: `serve PORT` (in-memory HTTP key-value server) and
//! `blk DEV MIB RUNS SECONDS` (O_DIRECT block benchmark).

mod blk;
mod http;
mod server;

use http::Client;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

fn arg<T: std::str::FromStr>(a: &[String], i: usize, what: &str) -> Result<T, String> {
    a.get(i)
        .ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|_| format!("bad {what}: {:?}", a[i]))
}

const TIMEOUT: Duration = Duration::from_secs(120);

fn first_answer(a: &[String]) -> Result<(), String> {
    let host: String = arg(a, 0, "HOST")?;
    let port: u16 = arg(a, 1, "PORT")?;
    let path: String = arg(a, 2, "PATH")?;
    let limit = Duration::from_secs(arg(a, 3, "TIMEOUT_S")?);
    let cmd = a.get(5..).filter(|c| a[4] == "--" && !c.is_empty());
    let cmd = cmd.ok_or("expected -- CMD...")?;
    let t0 = Instant::now();
    let st = Command::new(&cmd[0])
        .args(&cmd[1..])
        .status()
        .map_err(|e| format!("{}: {e}", cmd[0]))?;
    if !st.success() {
        return Err(format!("{cmd:?} failed: {st}"));
    }
    let t1 = Instant::now();
    loop {
        // A SYN sent before the guest is up is lost: try again after 100 ms (the poll's
        // granularity), not after the kernel's 1 s SYN retransmission.
        let ok = Client::connect_split(
            &host,
            port,
            Duration::from_millis(100),
            Duration::from_secs(5),
        )
        .and_then(|mut c| c.request("GET", &path, b"", true, None));
        if let Ok((code, _)) = ok {
            let t2 = Instant::now();
            println!(
                "cmd_s={:.3} after_cmd_s={:.3} status={code}",
                (t1 - t0).as_secs_f64(),
                (t2 - t1).as_secs_f64()
            );
            return Ok(());
        }
        if t1.elapsed() > limit {
            return Err(format!("no answer within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn bulk(a: &[String], put: bool) -> Result<(), String> {
    let host: String = arg(a, 0, "HOST")?;
    let port: u16 = arg(a, 1, "PORT")?;
    let path: String = arg(a, 2, "PATH")?;
    let bytes: usize = arg(a, 3, "BYTES")?;
    let body: Vec<u8> = (0..bytes).map(|i| (i * 7 + i / 4096) as u8).collect();
    let t = Instant::now();
    let mut c = Client::connect(&host, port, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    let (code, n) = if put {
        c.request("PUT", &path, &body, true, None)
    } else {
        let mut got = Vec::with_capacity(bytes);
        let r = c.request("GET", &path, b"", true, Some(&mut got));
        if r.is_ok() && got != body {
            return Err(format!(
                "GET {path}: {} bytes back, not the value put",
                got.len()
            ));
        }
        r
    }
    .map_err(|e| format!("{path}: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !(200..300).contains(&code) {
        return Err(format!("{path}: status {code}"));
    }
    let moved = if put { bytes } else { n };
    println!("mbps={:.3} secs={secs:.3}", moved as f64 / 1e6 / secs);
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn lat(a: &[String]) -> Result<(), String> {
    let host: String = arg(a, 0, "HOST")?;
    let port: u16 = arg(a, 1, "PORT")?;
    let path: String = arg(a, 2, "PATH")?;
    let n: usize = arg(a, 3, "N")?;
    let mut c = Client::connect(&host, port, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    let mut us = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let t = Instant::now();
        let (code, _) = c
            .request("GET", &path, b"", false, None)
            .map_err(|e| format!("GET {path}: {e}"))?;
        if !(200..300).contains(&code) {
            return Err(format!("GET {path}: status {code}"));
        }
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    println!(
        "p50_us={:.0} p99_us={:.0}",
        percentile(&us, 0.5),
        percentile(&us, 0.99)
    );
    Ok(())
}

fn rps(a: &[String]) -> Result<(), String> {
    let host: String = arg(a, 0, "HOST")?;
    let port: u16 = arg(a, 1, "PORT")?;
    let path: String = arg(a, 2, "PATH")?;
    let conns: usize = arg(a, 3, "CONNS")?;
    let dur = Duration::from_secs(arg(a, 4, "SECONDS")?);
    let start = Instant::now();
    let hs: Vec<_> = (0..conns)
        .map(|_| {
            let (host, path) = (host.clone(), path.clone());
            std::thread::spawn(move || -> Result<u64, String> {
                let mut c =
                    Client::connect(&host, port, TIMEOUT).map_err(|e| format!("connect: {e}"))?;
                let mut n = 0;
                while start.elapsed() < dur {
                    let (code, _) = c
                        .request("GET", &path, b"", false, None)
                        .map_err(|e| format!("GET {path}: {e}"))?;
                    if !(200..300).contains(&code) {
                        return Err(format!("status {code}"));
                    }
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in hs {
        total += h
            .join()
            .map_err(|_| "client thread panicked".to_string())??;
    }
    println!(
        "rps={:.1} requests={total}",
        total as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: xbench first-answer|put|get|lat|rps|serve|blk ...");
        return ExitCode::from(2);
    };
    let r = match cmd.as_str() {
        "first-answer" => first_answer(rest),
        "put" => bulk(rest, true),
        "get" => bulk(rest, false),
        "lat" => lat(rest),
        "rps" => rps(rest),
        "serve" => arg(rest, 0, "PORT").and_then(|p| server::serve(p).map_err(|e| e.to_string())),
        "blk" => (|| {
            let dev: String = arg(rest, 0, "DEV")?;
            blk::run(
                &dev,
                arg(rest, 1, "MIB")?,
                arg(rest, 2, "RUNS")?,
                arg(rest, 3, "SECONDS")?,
            )
            .map_err(|e| format!("{dev}: {e}"))
        })(),
        other => Err(format!("unknown command {other:?}")),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xbench {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}
