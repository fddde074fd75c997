//! Kernel command line: whitespace-separated `key=value` options and flags.
//!
//! - `ip=A.B.C.D/N`: static IPv4 address and prefix length (DHCP when absent or invalid);
//! - `gw=A.B.C.D`: default gateway (only with `ip=`);
//! - `selftest`: run the boot self-tests and exit (plain QEMU: through isa-debug-exit; Xen: poweroff);
//! - `panic`: panic right after boot (tests the crash path);
//! - `fault`: touch an unmapped address right after boot (tests the exception handlers);
//! - `overflow`: overflow the boot stack right after boot (tests the guard page);
//! - `debugcon`: keep copying console output to port 0xE9 after the PV console is up.
//!
//! A bad value is reported with a clear message and ignored; it never stops the boot.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// An IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4(pub [u8; 4]);

impl fmt::Display for Ipv4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// An IPv4 address with prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// Address.
    pub addr: Ipv4,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parsed options.
#[derive(Debug, Clone, Copy, Default)]
pub struct Config {
    /// Static address (`ip=`); `None` means DHCP.
    pub ip: Option<Ipv4Cidr>,
    /// Gateway (`gw=`).
    pub gw: Option<Ipv4>,
    /// Run self-tests and exit.
    pub selftest: bool,
    /// Panic deliberately after boot.
    pub panic: bool,
    /// Page-fault deliberately after boot.
    pub fault: bool,
    /// Overflow the stack deliberately after boot.
    pub overflow: bool,
    /// Keep port 0xE9 output after the PV console is up.
    pub debugcon: bool,
    /// `bench=blk[:RUNS]`: runs of the raw-disk benchmark at boot (0: none; see benchmode.rs).
    pub bench_blk_runs: u8,
}

/// Why a value was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrError {
    /// Not four dot-separated fields.
    FieldCount,
    /// A field is empty or not a decimal number.
    NotANumber,
    /// A field exceeds 255.
    OctetRange(u32),
    /// No `/N` prefix length.
    MissingPrefix,
    /// The prefix length is not a number or exceeds 32.
    PrefixRange,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::FieldCount => write!(f, "expected four dot-separated numbers"),
            AddrError::NotANumber => write!(f, "a field is not a decimal number"),
            AddrError::OctetRange(v) => write!(f, "octet {v} is out of range 0..=255"),
            AddrError::MissingPrefix => write!(f, "missing /N prefix length"),
            AddrError::PrefixRange => write!(f, "prefix length must be a number in 0..=32"),
        }
    }
}

fn parse_num(s: &str) -> Result<u32, AddrError> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrError::NotANumber);
    }
    s.parse::<u32>().map_err(|_| AddrError::NotANumber)
}

/// Parses `A.B.C.D`.
pub fn parse_ipv4(s: &str) -> Result<Ipv4, AddrError> {
    let mut out = [0u8; 4];
    let mut n = 0;
    for part in s.split('.') {
        if n == 4 {
            return Err(AddrError::FieldCount);
        }
        let v = parse_num(part)?;
        if v > 255 {
            return Err(AddrError::OctetRange(v));
        }
        out[n] = v as u8;
        n += 1;
    }
    if n != 4 {
        return Err(AddrError::FieldCount);
    }
    Ok(Ipv4(out))
}

/// Parses `A.B.C.D/N`.
pub fn parse_cidr(s: &str) -> Result<Ipv4Cidr, AddrError> {
    let (a, p) = s.split_once('/').ok_or(AddrError::MissingPrefix)?;
    let addr = parse_ipv4(a)?;
    let prefix = parse_num(p).map_err(|_| AddrError::PrefixRange)?;
    if prefix > 32 {
        return Err(AddrError::PrefixRange);
    }
    Ok(Ipv4Cidr {
        addr,
        prefix: prefix as u8,
    })
}

/// Parses `cmdline`; returns the options and a clear message for each bad or unknown option (the
/// caller prints them once the console is fully up).
pub fn parse(cmdline: &str) -> (Config, Vec<String>) {
    let mut c = Config::default();
    let mut warnings = Vec::new();
    for tok in cmdline.split_ascii_whitespace() {
        let (k, v) = match tok.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (tok, None),
        };
        match (k, v) {
            ("ip", Some(v)) => match parse_cidr(v) {
                Ok(ip) => c.ip = Some(ip),
                Err(e) => warnings.push(format!(
                    "cmdline: bad value in `ip={v}`: {e} (expected ip=A.B.C.D/N, e.g. ip=10.0.0.2/24); ignoring it, falling back to DHCP"
                )),
            },
            ("gw", Some(v)) => match parse_ipv4(v) {
                Ok(g) => c.gw = Some(g),
                Err(e) => warnings.push(format!(
                    "cmdline: bad value in `gw={v}`: {e} (expected gw=A.B.C.D); ignoring it"
                )),
            },
            ("selftest", None) => c.selftest = true,
            ("panic", None) => c.panic = true,
            ("fault", None) => c.fault = true,
            ("overflow", None) => c.overflow = true,
            ("debugcon", None) => c.debugcon = true,
            ("bench", Some(v)) if v == "blk" || v.starts_with("blk:") => {
                c.bench_blk_runs = v.strip_prefix("blk:").map_or(Some(3), |n| n.parse().ok()).unwrap_or(3)
            }
            _ => warnings.push(format!("cmdline: unknown option `{tok}` ignored")),
        }
    }
    if c.gw.is_some() && c.ip.is_none() {
        warnings.push(
            "cmdline: gw= given without a valid ip=; the gateway comes from DHCP instead".into(),
        );
        c.gw = None;
    }
    (c, warnings)
}
