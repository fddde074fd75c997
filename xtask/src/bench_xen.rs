//! `cargo xtask bench --xen [--runs N] [--memory MIB] [--idle SECS] [--no-min-memory]
//! [--only-min-memory] [--short] [--kernel ELF] [--timeout SECS] [--uk-cmdline ARGS]`: the unikernel and the Linux PV baseline guest side by side in
//! one nested-Xen boot (tests/harness/scenarios/bench.sh), every figure measured by the same
//! dom0-side tool for both (`xbench`, tests/harness/tools/xbench, built static here).
//!
//! Writes `target/bench-xen.json` (a list of `{figure, unit, unikernel, linux, ratio, better}`,
//! medians, plus the runs and the spread), prints a table and draws `target/bench-xen.svg` (how
//! many times better the unikernel is, per figure; the README shows a copy, docs/bench-xen.svg).
//! `cargo xtask test` runs the short form ([`Options::short`]) and checks every figure arrived.

use crate::util;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Which direction is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

impl Better {
    fn name(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
        }
    }
}

/// The figures, in table order: (id, description, better, needed in the short form).
const FIGURES: &[(&str, &str, Better, bool)] = &[
    (
        "boot_create_to_answer_s",
        "boot: xl create to first HTTP answer",
        Better::Lower,
        true,
    ),
    (
        "boot_start_to_answer_s",
        "boot: xl unpause to first HTTP answer",
        Better::Lower,
        true,
    ),
    (
        "boot_guest_ready_s",
        "boot: guest's own clock when serving",
        Better::Lower,
        true,
    ),
    (
        "boot_xl_create_s",
        "boot: xl create -p (toolstack only)",
        Better::Lower,
        true,
    ),
    (
        "shutdown_s",
        "xl shutdown -w until gone",
        Better::Lower,
        true,
    ),
    (
        "image_kib",
        "image as booted (stripped ELF; vmlinux + initrd)",
        Better::Lower,
        true,
    ),
    (
        "mem_xl_list_mib",
        "memory seen by dom0 (xl list)",
        Better::Lower,
        true,
    ),
    (
        "min_memory_mib",
        "smallest memory= serving 1 MiB PUT+GET",
        Better::Lower,
        false,
    ),
    (
        "net_put_mbps",
        "TCP dom0->guest (1 MiB HTTP PUT)",
        Better::Higher,
        true,
    ),
    (
        "net_get_mbps",
        "TCP guest->dom0 (1 MiB HTTP GET)",
        Better::Higher,
        true,
    ),
    (
        "lat_p50_us",
        "64 B GET keep-alive, p50",
        Better::Lower,
        true,
    ),
    (
        "lat_p99_us",
        "64 B GET keep-alive, p99",
        Better::Lower,
        true,
    ),
    (
        "rps",
        "64 B GETs/s, 8 keep-alive clients",
        Better::Higher,
        true,
    ),
    (
        "blk_seq_write",
        "blk sequential write, 1 MiB QD1",
        Better::Higher,
        true,
    ),
    (
        "blk_seq_read",
        "blk sequential read, 1 MiB QD1",
        Better::Higher,
        true,
    ),
    (
        "blk_randread_qd1",
        "blk 4 KiB random read, QD1",
        Better::Higher,
        true,
    ),
    (
        "blk_randread_qd32",
        "blk 4 KiB random read, QD32",
        Better::Higher,
        true,
    ),
    ("idle_cpu_s", "guest CPU while idle", Better::Lower, true),
];

/// What one bench boot measures.
#[derive(Debug, Clone)]
pub struct Options {
    runs: u32,
    memory_mib: u32,
    idle_s: u32,
    min_memory: bool,
    lat_n: u32,
    rps_secs: u32,
    /// Bytes of the TCP bulk PUT and GET.
    bulk_bytes: u32,
    timeout: Duration,
    kernel: Option<PathBuf>,
    /// The short form of `cargo xtask test`: results go to `target/bench-xen-short.json`.
    short: bool,
    /// Only the smallest-memory search (`--only-min-memory`): `target/bench-xen-min-memory.json`.
    only_min_memory: bool,
    /// More unikernel command line (`--uk-cmdline`, e.g. `loglevel=warn` to measure without the
    /// per-request log line).
    uk_cmdline: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            runs: 3,
            memory_mib: 128,
            idle_s: 30,
            min_memory: true,
            lat_n: 200,
            rps_secs: 5,
            bulk_bytes: 1 << 20,
            timeout: Duration::from_secs(5400),
            kernel: None,
            short: false,
            only_min_memory: false,
            uk_cmdline: String::new(),
        }
    }
}

impl Options {
    /// One repetition of every figure with the smallest phases that still measure it (3 s idle,
    /// 30 latency samples, 1 s of concurrent clients, 256 KiB bulk transfers), no smallest-memory
    /// search: `cargo xtask test` runs it so the benchmark cannot rot.
    pub fn short() -> Options {
        Options {
            runs: 1,
            idle_s: 3,
            min_memory: false,
            lat_n: 30,
            rps_secs: 1,
            bulk_bytes: 256 << 10,
            short: true,
            ..Options::default()
        }
    }

    fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut num = |name: &str| -> Result<u32, String> {
                let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
                v.parse()
                    .map_err(|_| format!("{name}: {v:?} is not a number"))
            };
            match a.as_str() {
                "--runs" => o.runs = num("--runs")?.max(1),
                "--memory" => o.memory_mib = num("--memory")?,
                "--idle" => o.idle_s = num("--idle")?,
                "--timeout" => o.timeout = Duration::from_secs(num("--timeout")?.into()),
                "--no-min-memory" => o.min_memory = false,
                "--short" => {
                    let (kernel, uk_cmdline) = (o.kernel.take(), std::mem::take(&mut o.uk_cmdline));
                    o = Options {
                        kernel,
                        uk_cmdline,
                        ..Options::short()
                    };
                }
                "--uk-cmdline" => {
                    let v = it.next().ok_or("--uk-cmdline needs a value")?;
                    // One line of the xl config (inside double quotes).
                    if v.contains(['"', '\n', '\\']) {
                        return Err(format!(
                            "--uk-cmdline {v:?}: no quotes, backslashes or newlines"
                        ));
                    }
                    o.uk_cmdline = v.clone();
                }
                "--only-min-memory" => {
                    o.only_min_memory = true;
                    o.min_memory = true;
                }
                "--kernel" => {
                    o.kernel = Some(PathBuf::from(
                        it.next().ok_or("--kernel needs a value")?.as_str(),
                    ))
                }
                other => return Err(format!("bench --xen: unknown option {other:?}")),
            }
        }
        Ok(o)
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            ("BENCH_RUNS", self.runs),
            ("BENCH_MEMORY", self.memory_mib),
            ("BENCH_IDLE", self.idle_s),
            ("BENCH_MINMEM", u32::from(self.min_memory)),
            ("BENCH_LAT_N", self.lat_n),
            ("BENCH_RPS_SECS", self.rps_secs),
            ("BENCH_BULK", self.bulk_bytes),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([
            (
                "BENCH_PARTS".to_string(),
                if self.only_min_memory {
                    "minmem"
                } else {
                    "all"
                }
                .to_string(),
            ),
            ("BENCH_UK_CMDLINE".to_string(), self.uk_cmdline.clone()),
        ])
        .collect()
    }
}

/// Everything a bench boot needs besides the harness itself.
pub struct Prepared {
    /// Variables for the dom0 scripts.
    pub env: Vec<(String, String)>,
    /// Payload files: (path below /payload, host file).
    pub files: Vec<(String, PathBuf)>,
    opts: Options,
}

fn out_dir() -> PathBuf {
    util::root().join("target/bench-xen")
}

/// Builds `xbench` static (glibc's static libc; crt-static) with its symbols stripped.
fn build_xbench() -> Result<PathBuf, String> {
    let target_dir = util::root().join("target/dom0-tools");
    util::run(
        Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "--package",
                "xbench",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--target-dir",
            ])
            .arg(&target_dir)
            .env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C strip=symbols",
            )
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .current_dir(util::root()),
    )?;
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release/xbench"))
}

/// Builds the tool, the stripped unikernel and the Linux guest's initramfs addition.
pub fn prepare(kernel: &Path, opts: &Options) -> Result<Prepared, String> {
    let dir = out_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let xbench = util::phase(
        "build xbench (static, for dom0 and the Linux guest)",
        build_xbench,
    )?;
    let stripped = dir.join("unikernel.elf");
    util::run(Command::new("strip").arg("-o").arg(&stripped).arg(kernel))
        .map_err(|e| format!("{e} (the image-size figure needs binutils' strip)"))?;
    // The Linux guest's addition: /bin/xbench and /etc/guest-hook.sh, as a gzip'd newc cpio that
    // dom0 appends to the guest's initramfs.
    let stage = dir.join("guest-extra");
    let _ = fs::remove_dir_all(&stage);
    for d in ["bin", "etc"] {
        fs::create_dir_all(stage.join(d)).map_err(|e| e.to_string())?;
    }
    fs::copy(&xbench, stage.join("bin/xbench")).map_err(|e| format!("xbench: {e}"))?;
    fs::copy(
        util::root().join("tests/harness/tools/guest-hook.sh"),
        stage.join("etc/guest-hook.sh"),
    )
    .map_err(|e| format!("guest-hook.sh: {e}"))?;
    let cpio = dir.join("guest-extra.cpio.gz");
    util::run(
        Command::new("bash")
            .args([
                "-c",
                &format!(
                    "set -e -o pipefail; find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6 > '{}'",
                    cpio.display()
                ),
            ])
            .current_dir(&stage),
    )?;
    Ok(Prepared {
        env: opts.env(),
        files: vec![
            ("bench/xbench".into(), xbench),
            ("bench/unikernel.elf".into(), stripped),
            ("bench/guest-extra.cpio.gz".into(), cpio),
        ],
        opts: opts.clone(),
    })
}

/// Median, smallest and largest of some values.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn stat(values: &[f64]) -> Option<Stat> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

/// One row of the result.
#[derive(Debug, Clone)]
struct Row {
    id: &'static str,
    what: &'static str,
    unit: String,
    better: Better,
    uk: Option<Stat>,
    linux: Option<Stat>,
}

impl Row {
    /// unikernel / Linux (medians).
    fn ratio(&self) -> Option<f64> {
        let (u, l) = (self.uk?.median, self.linux?.median);
        (l != 0.0).then_some(u / l).filter(|r| r.is_finite())
    }
    /// How many times better the unikernel is (>1: better).
    fn advantage(&self) -> Option<f64> {
        let r = self.ratio()?;
        match self.better {
            Better::Higher => Some(r),
            Better::Lower => (r > 0.0).then(|| 1.0 / r),
        }
    }
}

/// Groups `bench_<uk|linux>_<id>` figures into rows.
fn rows(figures: &[(String, String, String)]) -> Vec<Row> {
    let mut vals: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    for (k, v, u) in figures {
        let Some(rest) = k.strip_prefix("bench_") else {
            continue;
        };
        let Some((side, id)) = rest.split_once('_') else {
            continue;
        };
        if let Ok(x) = v.parse::<f64>() {
            vals.entry((side.to_string(), id.to_string()))
                .or_default()
                .push(x);
            units.insert(id.to_string(), u.clone());
        }
    }
    let get = |side: &str, id: &str| {
        vals.get(&(side.to_string(), id.to_string()))
            .and_then(|v| stat(v))
    };
    FIGURES
        .iter()
        .map(|&(id, what, better, _)| Row {
            id,
            what,
            unit: units.get(id).cloned().unwrap_or_default(),
            better,
            uk: get("uk", id),
            linux: get("linux", id),
        })
        .collect()
}

fn num(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".into(),
    }
}

fn to_json(rows: &[Row]) -> String {
    let mut s = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let spread = |st: Option<Stat>| match st {
            Some(st) => format!("[{}, {}]", st.min, st.max),
            None => "null".into(),
        };
        s.push_str(&format!(
            "  {{\"figure\": \"{}\", \"description\": \"{}\", \"unit\": \"{}\", \"unikernel\": {}, \"linux\": {}, \"ratio\": {}, \"better\": \"{}\", \"runs\": [{}, {}], \"unikernel_spread\": {}, \"linux_spread\": {}}}{}\n",
            r.id,
            r.what,
            r.unit,
            num(r.uk.map(|s| s.median)),
            num(r.linux.map(|s| s.median)),
            num(r.ratio()),
            r.better.name(),
            r.uk.map_or(0, |s| s.n),
            r.linux.map_or(0, |s| s.n),
            spread(r.uk),
            spread(r.linux),
            if i + 1 == rows.len() { "" } else { "," }
        ));
    }
    s.push_str("]\n");
    s
}

fn cell(st: Option<Stat>) -> String {
    match st {
        Some(s) if s.n > 1 => format!("{} [{}..{}]", g(s.median), g(s.min), g(s.max)),
        Some(s) => format!("{}", g(s.median)),
        None => "-".into(),
    }
}

/// Four significant digits, without a float's noise.
fn g(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let p = 10f64.powi(3 - x.abs().log10().floor() as i32);
    (x * p).round() / p
}

fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "| {:<48} | {:<7} | {:<26} | {:<26} | {:>7} | {:<6} |\n|{}|{}|{}|{}|{}|{}|\n",
        "figure",
        "unit",
        "unikernel median [min..max]",
        "Linux PV median [min..max]",
        "ratio",
        "better",
        "-".repeat(50),
        "-".repeat(9),
        "-".repeat(28),
        "-".repeat(28),
        "-".repeat(9),
        "-".repeat(8)
    );
    for r in rows {
        s.push_str(&format!(
            "| {:<48} | {:<7} | {:<26} | {:<26} | {:>7} | {:<6} |\n",
            r.what,
            r.unit,
            cell(r.uk),
            cell(r.linux),
            r.ratio().map_or("-".into(), |x| format!("{}", g(x))),
            r.better.name()
        ));
    }
    s
}

/// The chart: per figure, how many times better the unikernel is than Linux (log scale, 1x in
/// the middle; green right of it where the unikernel wins, red left where Linux does).
fn chart(rows: &[Row], path: &Path, caption: &str) -> Result<(), String> {
    use plotters::prelude::*;
    let shown: Vec<(&Row, f64)> = rows
        .iter()
        .filter_map(|r| r.advantage().filter(|a| *a > 0.0).map(|a| (r, a)))
        .collect();
    let (w, row_h, top, left, right) = (980i32, 26i32, 60i32, 360i32, 40i32);
    let h = top + row_h * shown.len().max(1) as i32 + 50;
    let root = SVGBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    let err = |e: DrawingAreaErrorKind<_>| format!("chart: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let font = ("sans-serif", 15).into_font();
    let small = ("sans-serif", 13).into_font();
    root.draw(&Text::new(
        caption.to_string(),
        (10, 10),
        ("sans-serif", 15).into_font(),
    ))
    .map_err(err)?;
    root.draw(&Text::new(
        "unikernel advantage over Linux PV (x better; log scale; right of 1x = unikernel better)",
        (10, 32),
        small.clone(),
    ))
    .map_err(err)?;
    // log10 range: at least 1/100x .. 100x.
    let span = shown
        .iter()
        .map(|(_, a)| a.log10().abs())
        .fold(2.0f64, f64::max)
        .ceil();
    let plot_w = f64::from(w - left - right);
    let x_of = |l: f64| left + ((l + span) / (2.0 * span) * plot_w) as i32;
    let bottom = top + row_h * shown.len().max(1) as i32;
    for k in -(span as i32)..=(span as i32) {
        let x = x_of(f64::from(k));
        let style = if k == 0 {
            BLACK
        } else {
            RGBColor(200, 200, 200)
        };
        root.draw(&PathElement::new(vec![(x, top - 4), (x, bottom)], style))
            .map_err(err)?;
        let label = if k >= 0 {
            format!("{}x", 10f64.powi(k))
        } else {
            format!("1/{}x", 10f64.powi(-k))
        };
        root.draw(&Text::new(label, (x - 10, bottom + 6), small.clone()))
            .map_err(err)?;
    }
    for (i, (r, a)) in shown.iter().enumerate() {
        let y = top + row_h * i as i32;
        let (x0, x1) = (x_of(0.0), x_of(a.log10()));
        let color = if *a >= 1.0 {
            RGBColor(46, 139, 87)
        } else {
            RGBColor(200, 60, 60)
        };
        root.draw(&Rectangle::new(
            [
                (x0.min(x1), y + 4),
                (x0.max(x1).max(x0.min(x1) + 1), y + row_h - 4),
            ],
            color.filled(),
        ))
        .map_err(err)?;
        root.draw(&Text::new(r.what.to_string(), (8, y + 6), font.clone()))
            .map_err(err)?;
        let tx = if *a >= 1.0 { x1 + 4 } else { x0 + 4 };
        root.draw(&Text::new(
            format!("{:.3}x", g(*a)),
            (tx, y + 7),
            small.clone(),
        ))
        .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn machine_line() -> String {
    let sh = |c: &str| {
        Command::new("sh")
            .args(["-c", c])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{} UTC, {} cores, load {}",
        sh("date -u '+%Y-%m-%d %H:%M'"),
        sh("nproc"),
        sh("cut -d' ' -f1-3 /proc/loadavg")
    )
}

/// The figures a run with `opts` must produce for both guests and did not: every figure of the
/// table in the short form (but the smallest `memory=`, searched only when asked for), only that
/// one with `--only-min-memory`.
fn missing(rows: &[Row], opts: &Options) -> Vec<String> {
    rows.iter()
        .filter(|r| {
            let wanted = if opts.only_min_memory {
                r.id == "min_memory_mib"
            } else {
                r.id != "min_memory_mib" || opts.min_memory
            };
            wanted
                && FIGURES.iter().any(|f| f.0 == r.id && (f.3 || !opts.short))
                && (r.uk.is_none() || r.linux.is_none())
        })
        .map(|r| r.id.to_string())
        .collect()
}

/// Turns the figures of a bench boot into the JSON, the table and the chart. In the short form,
/// fails when a figure is missing for either guest.
pub fn report(p: &Prepared, figures: &[(String, String, String)]) -> Result<(), String> {
    let rows = rows(figures);
    let stem = if p.opts.short {
        "bench-xen-short"
    } else if p.opts.only_min_memory {
        "bench-xen-min-memory"
    } else {
        "bench-xen"
    };
    let target = util::root().join("target");
    let json = target.join(format!("{stem}.json"));
    fs::write(&json, to_json(&rows)).map_err(|e| format!("{}: {e}", json.display()))?;
    let when = machine_line();
    let caption = format!(
        "xen-rs unikernel vs Linux PV, same Xen 4.17 in QEMU TCG, memory={} MiB, {} run(s); {when}",
        p.opts.memory_mib, p.opts.runs
    );
    let svg = target.join(format!("{stem}.svg"));
    chart(&rows, &svg, &caption)?;
    println!("{caption}\n{}", table(&rows));
    println!("wrote {} and {}", json.display(), svg.display());
    let missing = missing(&rows, &p.opts);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "bench --xen: figures missing: {}",
            missing.join(", ")
        ))
    }
}

/// `cargo xtask bench --xen ...`.
pub fn run(args: &[String]) -> Result<(), String> {
    let opts = Options::parse(args)?;
    let kernel = match &opts.kernel {
        Some(k) => k.clone(),
        None => match std::env::var_os("XEN_RS_KERNEL") {
            Some(k) => PathBuf::from(k),
            None => util::phase("build the unikernel", crate::kernel::build)?,
        },
    };
    let p = prepare(&kernel, &opts)?;
    let (figures, ok) = crate::harness::run_for_figures(
        &["bench"],
        kernel,
        p.env.clone(),
        p.files.clone(),
        opts.timeout,
    )?;
    if figures.is_empty() {
        return Err("the bench boot gave no figures (see above); nothing written".into());
    }
    let r = report(&p, &figures);
    if !ok {
        return Err(
            "some bench steps failed (see above); the figures they gave are reported".into(),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(k: &str, v: &str) -> (String, String, String) {
        (k.into(), v.into(), "s".into())
    }

    #[test]
    fn medians_spread_and_ratios() {
        let f = vec![
            fig("bench_uk_boot_start_to_answer_s", "1.0"),
            fig("bench_uk_boot_start_to_answer_s", "3.0"),
            fig("bench_uk_boot_start_to_answer_s", "2.0"),
            fig("bench_linux_boot_start_to_answer_s", "10.0"),
            fig("bench_uk_rps", "300"),
            fig("bench_linux_rps", "100"),
            fig("bench_linux_idle_cpu_s", "0"),
            fig("bench_uk_idle_cpu_s", "0.5"),
            fig("xen_boot_to_dom0_ready_s", "9"),
            fig("bench_uk_rps", "not-a-number"),
        ];
        let r = rows(&f);
        let boot = r.iter().find(|r| r.id == "boot_start_to_answer_s").unwrap();
        assert_eq!(
            boot.uk,
            Some(Stat {
                median: 2.0,
                min: 1.0,
                max: 3.0,
                n: 3
            })
        );
        assert_eq!(boot.ratio(), Some(0.2));
        assert_eq!(boot.advantage(), Some(5.0));
        let rps = r.iter().find(|r| r.id == "rps").unwrap();
        assert_eq!(rps.advantage(), Some(3.0));
        let idle = r.iter().find(|r| r.id == "idle_cpu_s").unwrap();
        assert_eq!(idle.ratio(), None, "no ratio against a zero");
        let json = to_json(&r);
        assert!(json.contains("\"figure\": \"rps\""));
        assert!(json.contains("\"ratio\": 3,") || json.contains("\"ratio\": 3.0,"));
        assert!(json.contains("\"ratio\": null"));
        assert_eq!(stat(&[4.0, 1.0]).map(|s| s.median), Some(2.5));
        assert_eq!(stat(&[]), None);
    }

    #[test]
    fn options_parse() {
        let o = Options::parse(&["--runs".into(), "5".into(), "--no-min-memory".into()]).unwrap();
        assert_eq!((o.runs, o.min_memory), (5, false));
        assert!(Options::parse(&["--runs".into(), "x".into()]).is_err());
        assert!(Options::parse(&["--bogus".into()]).is_err());
        assert!(Options::short()
            .env()
            .contains(&("BENCH_RUNS".into(), "1".into())));
        let s = Options::parse(&["--kernel".into(), "k.elf".into(), "--short".into()]).unwrap();
        assert!(s.short && s.runs == 1 && !s.min_memory);
        assert_eq!(s.kernel, Some(PathBuf::from("k.elf")));
        assert!(s.env().contains(&("BENCH_BULK".into(), "262144".into())));
        let c = Options::parse(&[
            "--uk-cmdline".into(),
            "loglevel=warn".into(),
            "--short".into(),
        ])
        .unwrap();
        assert!(c.short);
        assert!(c
            .env()
            .contains(&("BENCH_UK_CMDLINE".into(), "loglevel=warn".into())));
        assert!(Options::parse(&["--uk-cmdline".into(), "a\"b".into()]).is_err());
    }

    #[test]
    fn short_form_wants_every_figure_of_both_guests() {
        let short = Options::short();
        let all: Vec<(String, String, String)> = FIGURES
            .iter()
            .filter(|f| f.0 != "min_memory_mib")
            .flat_map(|f| ["uk", "linux"].map(|side| fig(&format!("bench_{side}_{}", f.0), "1")))
            .collect();
        assert!(missing(&rows(&all), &short).is_empty());
        // One guest's figure gone (e.g. its step failed): the short form fails on it.
        let less: Vec<_> = all
            .iter()
            .filter(|f| f.0 != "bench_linux_boot_guest_ready_s")
            .cloned()
            .collect();
        assert_eq!(missing(&rows(&less), &short), ["boot_guest_ready_s"]);
        // Nothing at all: every figure of the table but the smallest memory= is missing.
        assert_eq!(missing(&rows(&[]), &short).len(), FIGURES.len() - 1);
        // The full run also wants the smallest memory=.
        assert_eq!(
            missing(&rows(&all), &Options::default()),
            ["min_memory_mib"]
        );
    }

    #[test]
    fn chart_is_written() {
        let dir = std::env::temp_dir().join(format!("bench-xen-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let f = vec![
            fig("bench_uk_rps", "300"),
            fig("bench_linux_rps", "100"),
            fig("bench_uk_boot_start_to_answer_s", "0.5"),
            fig("bench_linux_boot_start_to_answer_s", "10"),
        ];
        let p = dir.join("c.svg");
        chart(&rows(&f), &p, "test").unwrap();
        let svg = fs::read_to_string(&p).unwrap();
        assert!(svg.contains("<svg") && svg.contains("64 B GETs/s"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
