//! `xen-bench`: host-simulator benchmarks (run with `cargo xtask bench`).
//!
//! Each figure is measured through the simulated backend and printed beside a same-run bound
//! (`ratio` = figure / bound): the memcpy of the bytes it moved (1.0 means "as fast as copying the
//! payload once"), or for 64-byte packets the shared-ring operations alone (`ring.rs`: 1.0 means
//! "as fast as producing and consuming the ring slots, nothing else"). The figures also go to
//! `target/bench-results.json`.
//!
//! These are benchmarks, never tests: nothing here asserts on timing.

mod blk;
mod connect;
mod net;
mod ring;

use std::hint::black_box;
use std::time::{Duration, Instant};

/// One measured figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// What was measured, e.g. `"blk read 4KiB QD1"`.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// Its unit (`"IOPS"`, `"MB/s"`, `"Mpps"`, `"Gbit/s"`).
    pub unit: &'static str,
    /// Which bound [`ratio`](Self::ratio) is against: `"memcpy"` (copying the same bytes once)
    /// or `"ring"` (the shared-ring operations alone, for 64-byte packets).
    pub bound: &'static str,
    /// The value divided by the same-run bound (`None` when no bound applies).
    pub ratio: Option<f64>,
}

/// Seconds per byte of a plain memcpy moving `chunk`-byte pieces out of a `region`-byte source
/// (visited with a fixed stride, like the benchmarks visit the disk) into one `chunk`-byte buffer:
/// what moving the same bytes once would cost, measured now (best of a few runs of about `total`
/// bytes each).
pub fn memcpy_secs_per_byte(chunk: usize, region: usize, total: usize) -> f64 {
    let region = region.max(chunk);
    let src: Vec<u8> = (0..region).map(|i| i as u8).collect();
    let mut dst = vec![0u8; chunk];
    let slots = (region / chunk) as u64;
    let reps = (total / chunk).max(1);
    let mut best = f64::MAX;
    let mut next = 0u64;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            next = (next + 7919) % slots;
            let off = next as usize * chunk;
            dst.copy_from_slice(black_box(&src[off..off + chunk]));
            black_box(&mut dst);
        }
        let secs = t.elapsed().as_secs_f64() / (reps * chunk) as f64;
        best = best.min(secs);
    }
    best
}

/// Runs `f` until at least `min` time has passed (and at least `min_iters` times); returns
/// (iterations, elapsed).
pub fn timed(min: Duration, min_iters: u64, mut f: impl FnMut()) -> (u64, Duration) {
    let start = Instant::now();
    let mut n = 0;
    while n < min_iters || start.elapsed() < min {
        f();
        n += 1;
    }
    (n, start.elapsed())
}

fn json_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' => "\\\"".chars().collect::<Vec<_>>(),
            '\\' => "\\\\".chars().collect(),
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}

fn to_json(figures: &[Figure]) -> String {
    let mut out = String::from("[\n");
    for (i, f) in figures.iter().enumerate() {
        let ratio = f.ratio.map_or("null".to_string(), |r| format!("{r:.4}"));
        out.push_str(&format!(
            "  {{\"name\": \"{}\", \"value\": {:.3}, \"unit\": \"{}\", \"bound\": \"{}\", \"ratio\": {}}}{}\n",
            json_escape(&f.name),
            f.value,
            json_escape(f.unit),
            f.bound,
            ratio,
            if i + 1 < figures.len() { "," } else { "" }
        ));
    }
    out.push(']');
    out.push('\n');
    out
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).collect();
    let wanted = |group: &str| filter.is_empty() || filter.iter().any(|f| f == group);
    let mut figures = Vec::new();
    if wanted("blk") {
        blk::run(&mut figures);
    }
    if wanted("net") {
        net::run(&mut figures);
    }
    if wanted("connect") {
        connect::run(&mut figures);
    }
    println!(
        "{:<34} {:>14} {:<8} {:>12}",
        "figure", "value", "unit", "vs bound"
    );
    for f in &figures {
        let ratio = f
            .ratio
            .map_or("-".to_string(), |r| format!("{r:.3} {}", f.bound));
        println!(
            "{:<34} {:>14.1} {:<8} {:>12}",
            f.name, f.value, f.unit, ratio
        );
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("bench-results.json");
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&path, to_json(&figures)) {
        Ok(()) => println!("results written to {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
