//! The unikernel's command line: whitespace-separated `key=value` options and flags, parsed into a
//! [`Config`] with a typed [`OptionError`] for every bad or unknown token.
//!
//! A bad value never stops the boot: the option keeps its default and the error is printed. The
//! kernel prints the effective values ([`Config::effective`]) at boot.
//!
//! | option                | meaning                                                              |
//! |-----------------------|----------------------------------------------------------------------|
//! | `ip=A.B.C.D/N`        | static IPv4 address and prefix length of interface 0 (DHCP when absent; `ip=dhcp` says so) |
//! | `gw=A.B.C.D`          | IPv4 default gateway of interface 0 (only with `ip=`)               |
//! | `ipK=A.B.C.D/N\|dhcp` | the same for interface K (1..=7; `ip0=` is `ip=`; interface 6 is `ip06=` since `ip6=` is IPv6): Xen vif K (`device/vif/K`), the K-th virtio-net device |
//! | `gwK=A.B.C.D`         | default gateway of interface K (only with `ipK=`)                    |
//! | `ip6=ADDR/N`          | static IPv6 address of interface 0 (besides each interface's link-local one from its MAC) |
//! | `dns=A[,B[,C]]`       | DNS servers (IPv4 or IPv6), reported in `/stats`                     |
//! | `port=N`              | TCP port of the HTTP server (1..=65535, default 80)                  |
//! | `max_conns=N`         | connections served at once (1..=256)                                 |
//! | `max_value=N[K\|M]`   | largest value (request body) in bytes, `K` = KiB, `M` = MiB          |
//! | `value_cache=N[K\|M]` | the store's cache of small values in bytes (0 = off; default: from the free memory, at most 256 KiB) |
//! | `watchdog=S`          | arm Xen's domain watchdog with S seconds (1..=3600; 0 = off)         |
//! | `loglevel=L`          | `warn`, `info` (default: one line per request), `debug`, `trace`     |
//! | `debug_hang_after=S`  | TEST ONLY: stop the main loop S seconds after boot (watchdog test)   |
//! | `selftest`            | run the boot self-tests and exit                                     |
//! | `panic`/`fault`/`overflow` | crash deliberately after boot (tests the crash paths)           |
//! | `debugcon`            | keep copying console output to port 0xE9                             |
//! | `bench=blk[:N]`       | run the raw-disk benchmark N times (1..=20, default 3) on the second vbd at boot |
//! | `evtchn=A`            | event-channel ABI under Xen: `auto` (default), `2l`, `fifo`          |
#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
pub use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Largest `max_conns=`.
pub const MAX_CONNS_LIMIT: usize = 256;
/// Largest `max_value=` (the store's own limit, kv-app's `MAX_VALUE_LEN`).
pub const MAX_VALUE_LIMIT: usize = 16 << 20;
/// Largest `value_cache=` in bytes.
pub const VALUE_CACHE_LIMIT: usize = 64 << 20;
/// Largest `watchdog=` in seconds.
pub const WATCHDOG_LIMIT_S: u32 = 3600;
/// Most `dns=` servers.
pub const MAX_DNS: usize = 3;
/// Default TCP port.
pub const DEFAULT_PORT: u16 = 80;
/// Interfaces that can be given an address (`ip0=` .. `ip7=`); interface K is Xen's vif K.
pub const MAX_IFACES: u8 = 8;

/// An IPv4 address with prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// Address.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An IPv6 address with prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Cidr {
    /// Address.
    pub addr: Ipv6Addr,
    /// Prefix length, 0..=128.
    pub prefix: u8,
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How much the kernel logs (`loglevel=`). Warnings and errors are always logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    /// Warnings and errors only.
    Warn,
    /// Plus one line per HTTP request and other notable events (the default).
    #[default]
    Info,
    /// Plus debugging detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The option's spelling.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The event-channel ABI asked for with `evtchn=`.
///
/// The default is `auto`: FIFO when Xen offers it (Xen 4.4 and later), else 2-level. (2-level was
/// the default while a stall seen under FIFO on real Xen was open; its cause, the callback vector
/// re-delivered onto an IST stack, was not FIFO-specific and is fixed.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvtchnAbi {
    /// FIFO when Xen offers it, else 2-level.
    #[default]
    Auto,
    /// The 2-level ABI.
    TwoLevel,
    /// The FIFO ABI (boot fails over to a clear error if Xen lacks it).
    Fifo,
}

impl EvtchnAbi {
    /// The option's spelling.
    pub fn name(self) -> &'static str {
        match self {
            EvtchnAbi::Auto => "auto",
            EvtchnAbi::TwoLevel => "2l",
            EvtchnAbi::Fifo => "fifo",
        }
    }
}

/// The IPv4 settings of one interface (`ipK=`, `gwK=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Setting {
    /// Ask DHCP on this interface (no `ipK=`, or `ipK=dhcp`).
    Dhcp,
    /// A static address.
    Static {
        /// Address and prefix length: the interface's on-link route.
        cidr: Ipv4Cidr,
        /// Default gateway through this interface.
        gw: Option<Ipv4Addr>,
    },
}

/// `ipK=`/`gwK=` of one interface K >= 1 (interface 0 is [`Config::ip`] and [`Config::gw`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfaceConfig {
    /// The interface number K (1..[`MAX_IFACES`]).
    pub index: u8,
    /// `ipK=`: `None` is DHCP.
    pub ip: Option<Ipv4Cidr>,
    /// `gwK=`.
    pub gw: Option<Ipv4Addr>,
}

/// Parsed options (defaults where an option is absent or bad).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Static address of interface 0 (`ip=`, `ip0=`); `None` means DHCP.
    pub ip: Option<Ipv4Cidr>,
    /// Gateway of interface 0 (`gw=`, `gw0=`).
    pub gw: Option<Ipv4Addr>,
    /// `ipK=`/`gwK=` of the other interfaces, in order of K (only those given).
    pub ifaces: Vec<IfaceConfig>,
    /// Static IPv6 address (`ip6=`).
    pub ip6: Option<Ipv6Cidr>,
    /// DNS servers (`dns=`), at most [`MAX_DNS`].
    pub dns: Vec<IpAddr>,
    /// HTTP port (`port=`).
    pub port: u16,
    /// Connections at once (`max_conns=`); `None`: the server's default.
    pub max_conns: Option<usize>,
    /// Largest value in bytes (`max_value=`); `None`: the server's default.
    pub max_value: Option<usize>,
    /// The store's value cache in bytes (`value_cache=`, 0 = off); `None`: the kernel's
    /// default.
    pub value_cache: Option<usize>,
    /// Watchdog timeout in seconds (`watchdog=`); `None`: off.
    pub watchdog: Option<u32>,
    /// Log level (`loglevel=`).
    pub loglevel: LogLevel,
    /// Stop feeding the watchdog and serving this many seconds after boot (`debug_hang_after=`).
    pub debug_hang_after: Option<u32>,
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
    /// Event-channel ABI (`evtchn=`).
    pub evtchn: EvtchnAbi,
    /// `bench=blk[:RUNS]`: runs of the raw-disk benchmark at boot (0: none).
    pub bench_blk_runs: u8,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ip: None,
            gw: None,
            ifaces: Vec::new(),
            ip6: None,
            dns: Vec::new(),
            port: DEFAULT_PORT,
            max_conns: None,
            max_value: None,
            value_cache: None,
            watchdog: None,
            loglevel: LogLevel::default(),
            debug_hang_after: None,
            selftest: false,
            panic: false,
            fault: false,
            overflow: false,
            debugcon: false,
            evtchn: EvtchnAbi::default(),
            bench_blk_runs: 0,
        }
    }
}

/// Why an address was rejected.
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
    /// The prefix length is not a number or exceeds the address width.
    PrefixRange(u8),
    /// Not an IPv6 address (RFC 4291 text form).
    NotIpv6,
    /// Neither an IPv4 nor an IPv6 address.
    NotIp,
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::FieldCount => write!(f, "expected four dot-separated numbers"),
            AddrError::NotANumber => write!(f, "a field is not a decimal number"),
            AddrError::OctetRange(v) => write!(f, "octet {v} is out of range 0..=255"),
            AddrError::MissingPrefix => write!(f, "missing /N prefix length"),
            AddrError::PrefixRange(max) => {
                write!(f, "prefix length must be a number in 0..={max}")
            }
            AddrError::NotIpv6 => write!(f, "not an IPv6 address"),
            AddrError::NotIp => write!(f, "not an IPv4 or IPv6 address"),
        }
    }
}

/// Why an option was rejected (the option keeps its default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionError {
    /// An address option has a bad value.
    Address {
        /// The option.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        error: AddrError,
        /// The expected form.
        expected: &'static str,
    },
    /// A numeric option is not a number.
    NotANumber {
        /// The option.
        key: &'static str,
        /// The value given.
        value: String,
    },
    /// A numeric option is out of its range.
    OutOfRange {
        /// The option.
        key: &'static str,
        /// The value given.
        value: String,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// `loglevel=` is not one of the levels.
    LogLevel {
        /// The value given.
        value: String,
    },
    /// `bench=` is not `blk` or `blk:N` with N in 1..=20.
    Bench {
        /// The value given.
        value: String,
    },
    /// `evtchn=` is not `auto`, `2l` or `fifo`.
    Evtchn {
        /// The value given.
        value: String,
    },
    /// `dns=` lists more than [`MAX_DNS`] servers.
    TooManyDns {
        /// How many were given.
        count: usize,
    },
    /// An option that needs `=value` was given without one.
    MissingValue {
        /// The option.
        key: String,
    },
    /// A flag was given a value.
    UnexpectedValue {
        /// The token.
        token: String,
    },
    /// Not a known option.
    Unknown {
        /// The token.
        token: String,
    },
    /// `gw=` without a valid `ip=`.
    GatewayWithoutIp,
    /// `gwK=` without a valid `ipK=` (K >= 1).
    GatewayWithoutIpOn {
        /// The interface number K.
        iface: u8,
    },
    /// `ipK=`/`gwK=` names an interface beyond [`MAX_IFACES`].
    IfaceIndex {
        /// The token.
        token: String,
    },
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::Address {
                key,
                value,
                error,
                expected,
            } => write!(
                f,
                "bad value in `{key}={value}`: {error} (expected {expected}); ignoring it"
            ),
            OptionError::NotANumber { key, value } => write!(
                f,
                "bad value in `{key}={value}`: not a decimal number; ignoring it"
            ),
            OptionError::OutOfRange {
                key,
                value,
                min,
                max,
            } => write!(
                f,
                "bad value in `{key}={value}`: must be in {min}..={max}; ignoring it"
            ),
            OptionError::Bench { value } => write!(
                f,
                "bad value in `bench={value}`: expected blk or blk:N with N in 1..=20; no benchmark"
            ),
            OptionError::Evtchn { value } => write!(
                f,
                "bad value in `evtchn={value}`: expected auto, 2l or fifo; using the default"
            ),
            OptionError::LogLevel { value } => write!(
                f,
                "bad value in `loglevel={value}`: expected warn, info, debug or trace \
                 (warnings and errors are always logged); ignoring it"
            ),
            OptionError::TooManyDns { count } => write!(
                f,
                "`dns=` lists {count} servers, at most {MAX_DNS} are kept"
            ),
            OptionError::MissingValue { key } => {
                write!(f, "option `{key}` needs a value (`{key}=...`); ignoring it")
            }
            OptionError::UnexpectedValue { token } => {
                write!(f, "flag `{token}` takes no value; ignoring it")
            }
            OptionError::Unknown { token } => write!(f, "unknown option `{token}` ignored"),
            OptionError::GatewayWithoutIp => write!(
                f,
                "gw= given without a valid ip=; the gateway comes from DHCP instead"
            ),
            OptionError::GatewayWithoutIpOn { iface } => write!(
                f,
                "gw{iface}= given without a valid ip{iface}=; interface {iface} takes its gateway from DHCP instead"
            ),
            OptionError::IfaceIndex { token } => write!(
                f,
                "`{token}`: interfaces are numbered 0..={}; ignoring it",
                MAX_IFACES - 1
            ),
        }
    }
}

fn parse_octet_num(s: &str) -> Result<u32, AddrError> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrError::NotANumber);
    }
    s.parse::<u32>().map_err(|_| AddrError::NotANumber)
}

/// Parses `A.B.C.D` (four decimal fields, no leading signs or spaces).
pub fn parse_ipv4(s: &str) -> Result<Ipv4Addr, AddrError> {
    let mut out = [0u8; 4];
    let mut n = 0;
    for part in s.split('.') {
        if n == 4 {
            return Err(AddrError::FieldCount);
        }
        let v = parse_octet_num(part)?;
        out[n] = u8::try_from(v).map_err(|_| AddrError::OctetRange(v))?;
        n += 1;
    }
    if n != 4 {
        return Err(AddrError::FieldCount);
    }
    Ok(Ipv4Addr::from(out))
}

fn parse_prefix(p: &str, max: u8) -> Result<u8, AddrError> {
    let v = parse_octet_num(p).map_err(|_| AddrError::PrefixRange(max))?;
    u8::try_from(v)
        .ok()
        .filter(|&v| v <= max)
        .ok_or(AddrError::PrefixRange(max))
}

/// Parses `A.B.C.D/N`.
pub fn parse_cidr(s: &str) -> Result<Ipv4Cidr, AddrError> {
    let (a, p) = s.split_once('/').ok_or(AddrError::MissingPrefix)?;
    Ok(Ipv4Cidr {
        addr: parse_ipv4(a)?,
        prefix: parse_prefix(p, 32)?,
    })
}

/// Parses `ADDR/N` with an IPv6 address in RFC 4291 text form.
pub fn parse_cidr6(s: &str) -> Result<Ipv6Cidr, AddrError> {
    let (a, p) = s.split_once('/').ok_or(AddrError::MissingPrefix)?;
    Ok(Ipv6Cidr {
        addr: a.parse::<Ipv6Addr>().map_err(|_| AddrError::NotIpv6)?,
        prefix: parse_prefix(p, 128)?,
    })
}

/// Parses an IPv4 (`A.B.C.D`) or IPv6 address.
pub fn parse_ip(s: &str) -> Result<IpAddr, AddrError> {
    if s.contains(':') {
        s.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| AddrError::NotIpv6)
    } else {
        parse_ipv4(s).map(IpAddr::V4)
    }
}

/// Parses a decimal number in `min..=max`.
fn parse_range(key: &'static str, v: &str, min: u64, max: u64) -> Result<u64, OptionError> {
    parse_scaled(key, v, min, max, false)
}

/// Parses a decimal number in `min..=max`, with an optional `K`/`M` (KiB, MiB) suffix when
/// `suffixes`.
fn parse_scaled(
    key: &'static str,
    v: &str,
    min: u64,
    max: u64,
    suffixes: bool,
) -> Result<u64, OptionError> {
    let (digits, scale) = match v.as_bytes().last() {
        Some(b'k' | b'K') if suffixes => (&v[..v.len() - 1], 1024u64),
        Some(b'm' | b'M') if suffixes => (&v[..v.len() - 1], 1 << 20),
        _ => (v, 1),
    };
    let not_a_number = || OptionError::NotANumber {
        key,
        value: v.into(),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_a_number());
    }
    let out_of_range = || OptionError::OutOfRange {
        key,
        value: v.into(),
        min,
        max,
    };
    // Too many digits for u64 is out of range, not "not a number".
    let n = digits.parse::<u64>().map_err(|_| out_of_range())?;
    let n = n.checked_mul(scale).ok_or_else(out_of_range)?;
    if n < min || n > max {
        return Err(out_of_range());
    }
    Ok(n)
}

fn parse_loglevel(v: &str) -> Result<LogLevel, OptionError> {
    match v.to_ascii_lowercase().as_str() {
        "warn" | "warning" => Ok(LogLevel::Warn),
        "info" => Ok(LogLevel::Info),
        "debug" => Ok(LogLevel::Debug),
        "trace" => Ok(LogLevel::Trace),
        _ => Err(OptionError::LogLevel { value: v.into() }),
    }
}

/// Options that take a value.
const VALUED: &[&str] = &[
    "ip",
    "gw",
    "ip6",
    "dns",
    "port",
    "max_conns",
    "max_value",
    "value_cache",
    "watchdog",
    "loglevel",
    "debug_hang_after",
    "evtchn",
    "bench",
];

/// Parses `cmdline`; returns the options and an error for each bad or unknown token (the caller
/// prints them once the console is fully up; the options they name keep their defaults).
pub fn parse(cmdline: &str) -> (Config, Vec<OptionError>) {
    let mut c = Config::default();
    let mut errors = Vec::new();
    for tok in cmdline.split_ascii_whitespace() {
        if let Err(e) = apply(&mut c, tok) {
            errors.push(e);
        }
    }
    if c.gw.is_some() && c.ip.is_none() {
        errors.push(OptionError::GatewayWithoutIp);
        c.gw = None;
    }
    for i in c.ifaces.iter_mut() {
        if i.gw.is_some() && i.ip.is_none() {
            errors.push(OptionError::GatewayWithoutIpOn { iface: i.index });
            i.gw = None;
        }
    }
    (c, errors)
}

fn addr_err(
    key: &'static str,
    value: &str,
    expected: &'static str,
) -> impl FnOnce(AddrError) -> OptionError {
    let value = String::from(value);
    move |error| OptionError::Address {
        key,
        value,
        error,
        expected,
    }
}

/// Applies one token to `c`.
fn apply(c: &mut Config, tok: &str) -> Result<(), OptionError> {
    let (k, v) = match tok.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (tok, None),
    };
    let Some(v) = v else {
        let flag = match k {
            "selftest" => &mut c.selftest,
            "panic" => &mut c.panic,
            "fault" => &mut c.fault,
            "overflow" => &mut c.overflow,
            "debugcon" => &mut c.debugcon,
            _ if VALUED.contains(&k) || numbered(k).is_some() => {
                return Err(OptionError::MissingValue { key: k.into() })
            }
            _ => return Err(OptionError::Unknown { token: tok.into() }),
        };
        *flag = true;
        return Ok(());
    };
    if let Some((key, index)) = numbered(k) {
        let Some(index) = index.filter(|&i| i < MAX_IFACES) else {
            return Err(OptionError::IfaceIndex { token: tok.into() });
        };
        return apply_iface(c, key, index, v);
    }
    match k {
        "ip" => return apply_iface(c, "ip", 0, v),
        "gw" => return apply_iface(c, "gw", 0, v),
        "ip6" => {
            c.ip6 = Some(parse_cidr6(v).map_err(addr_err(
                "ip6",
                v,
                "ip6=ADDR/N, e.g. ip6=fd00::2/64",
            ))?)
        }
        "dns" => {
            let mut list = Vec::new();
            for a in v.split(',') {
                list.push(parse_ip(a).map_err(addr_err("dns", v, "dns=ADDR[,ADDR...]"))?);
            }
            let count = list.len();
            list.truncate(MAX_DNS);
            c.dns = list;
            if count > MAX_DNS {
                return Err(OptionError::TooManyDns { count });
            }
        }
        "port" => c.port = parse_range("port", v, 1, 65535)? as u16,
        "max_conns" => {
            c.max_conns = Some(parse_range("max_conns", v, 1, MAX_CONNS_LIMIT as u64)? as usize)
        }
        "max_value" => {
            c.max_value =
                Some(parse_scaled("max_value", v, 1, MAX_VALUE_LIMIT as u64, true)? as usize)
        }
        "value_cache" => {
            c.value_cache =
                Some(parse_scaled("value_cache", v, 0, VALUE_CACHE_LIMIT as u64, true)? as usize)
        }
        "watchdog" => {
            let s = parse_range("watchdog", v, 0, u64::from(WATCHDOG_LIMIT_S))? as u32;
            c.watchdog = (s > 0).then_some(s);
        }
        "loglevel" => c.loglevel = parse_loglevel(v)?,
        "bench" => {
            let runs = match v.strip_prefix("blk") {
                Some("") => Some(3),
                Some(n) => n
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<u8>().ok())
                    .filter(|n| (1..=20).contains(n)),
                None => None,
            };
            c.bench_blk_runs = runs.ok_or_else(|| OptionError::Bench { value: v.into() })?;
        }
        "evtchn" => {
            c.evtchn = match v {
                "auto" => EvtchnAbi::Auto,
                "2l" => EvtchnAbi::TwoLevel,
                "fifo" => EvtchnAbi::Fifo,
                _ => return Err(OptionError::Evtchn { value: v.into() }),
            }
        }
        "debug_hang_after" => {
            c.debug_hang_after = Some(parse_range("debug_hang_after", v, 0, 86_400)? as u32)
        }
        "selftest" | "panic" | "fault" | "overflow" | "debugcon" => {
            return Err(OptionError::UnexpectedValue { token: tok.into() })
        }
        _ => return Err(OptionError::Unknown { token: tok.into() }),
    }
    Ok(())
}

/// Splits `ipK`/`gwK` into the option and K (`None` when K is not a small decimal number);
/// `None` for every other key.
fn numbered(k: &str) -> Option<(&'static str, Option<u8>)> {
    let (key, digits) = if let Some(d) = k.strip_prefix("ip") {
        ("ip", d)
    } else if let Some(d) = k.strip_prefix("gw") {
        ("gw", d)
    } else {
        return None;
    };
    // `ip6=` is its own option; `ip` and `gw` alone are interface 0.
    if digits.is_empty()
        || (key == "ip" && digits == "6")
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((key, digits.parse::<u8>().ok()))
}

/// Applies `ipK=v` or `gwK=v` (`key` is `ip` or `gw`).
fn apply_iface(c: &mut Config, key: &'static str, index: u8, v: &str) -> Result<(), OptionError> {
    const IP: [&str; MAX_IFACES as usize] =
        ["ip", "ip1", "ip2", "ip3", "ip4", "ip5", "ip06", "ip7"];
    const GW: [&str; MAX_IFACES as usize] = ["gw", "gw1", "gw2", "gw3", "gw4", "gw5", "gw6", "gw7"];
    let (ip_key, gw_key) = (IP[usize::from(index)], GW[usize::from(index)]);
    if key == "ip" {
        let ip = if v.eq_ignore_ascii_case("dhcp") {
            None
        } else {
            Some(parse_cidr(v).map_err(addr_err(
                ip_key,
                v,
                "ipK=A.B.C.D/N or ipK=dhcp, e.g. ip=10.0.0.2/24; falling back to DHCP",
            ))?)
        };
        if index == 0 {
            c.ip = ip;
        } else {
            iface_entry(c, index).ip = ip;
        }
    } else {
        let gw = parse_ipv4(v).map_err(addr_err(gw_key, v, "gwK=A.B.C.D"))?;
        if index == 0 {
            c.gw = Some(gw);
        } else {
            iface_entry(c, index).gw = Some(gw);
        }
    }
    Ok(())
}

/// The entry of interface `index` (>= 1), created in order of K when missing.
fn iface_entry(c: &mut Config, index: u8) -> &mut IfaceConfig {
    let pos = match c.ifaces.binary_search_by_key(&index, |i| i.index) {
        Ok(p) => p,
        Err(p) => {
            c.ifaces.insert(
                p,
                IfaceConfig {
                    index,
                    ip: None,
                    gw: None,
                },
            );
            p
        }
    };
    &mut c.ifaces[pos]
}

impl Config {
    /// The IPv4 settings of interface `index` (0 is `ip=`/`gw=`).
    pub fn ipv4(&self, index: u32) -> Ipv4Setting {
        let (ip, gw) = if index == 0 {
            (self.ip, self.gw)
        } else {
            match self.ifaces.iter().find(|i| u32::from(i.index) == index) {
                Some(i) => (i.ip, i.gw),
                None => (None, None),
            }
        };
        match ip {
            Some(cidr) => Ipv4Setting::Static { cidr, gw },
            None => Ipv4Setting::Dhcp,
        }
    }

    /// The effective settings, one `key=value` line each, for the boot log. `max_value` is the
    /// value the server will use (`server_max_value`); without `max_conns=` the server chooses
    /// the connection count from the memory free when it starts (`max_conns=auto`).
    pub fn effective(&self, server_max_value: usize) -> Vec<String> {
        let mut out = Vec::new();
        out.push(match (self.ip, self.gw) {
            (Some(ip), Some(gw)) => format!("ip={ip} gw={gw}"),
            (Some(ip), None) => format!("ip={ip} gw=none"),
            (None, _) => "ip=dhcp".into(),
        });
        for i in &self.ifaces {
            let k = i.index;
            out.push(match (i.ip, i.gw) {
                (Some(ip), Some(gw)) => format!("ip{k}={ip} gw{k}={gw}"),
                (Some(ip), None) => format!("ip{k}={ip} gw{k}=none"),
                (None, _) => format!("ip{k}=dhcp"),
            });
        }
        out.push("ipK=dhcp on every other interface".into());
        out.push(match self.ip6 {
            Some(a) => format!("ip6={a} (plus link-local)"),
            None => "ip6=link-local only".into(),
        });
        let dns: Vec<String> = self.dns.iter().map(|a| format!("{a}")).collect();
        out.push(if dns.is_empty() {
            "dns=none".into()
        } else {
            format!("dns={}", dns.join(","))
        });
        out.push(format!("port={}", self.port));
        out.push(match self.max_conns {
            Some(n) => format!("max_conns={n}"),
            None => "max_conns=auto (from the free memory)".into(),
        });
        out.push(format!("max_value={server_max_value} bytes"));
        out.push(match self.value_cache {
            Some(0) => "value_cache=off".into(),
            Some(n) => format!("value_cache={n} bytes"),
            None => "value_cache=auto (from the free memory)".into(),
        });
        out.push(match self.watchdog {
            Some(s) => format!("watchdog={s} s"),
            None => "watchdog=off".into(),
        });
        out.push(format!("loglevel={}", self.loglevel.name()));
        out.push(format!("evtchn={}", self.evtchn.name()));
        if let Some(s) = self.debug_hang_after {
            out.push(format!(
                "debug_hang_after={s} s (TEST ONLY: the guest will hang)"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn one_error(cmdline: &str) -> OptionError {
        let (_, e) = parse(cmdline);
        assert_eq!(e.len(), 1, "{cmdline}: {e:?}");
        e.into_iter()
            .next()
            .unwrap_or(OptionError::GatewayWithoutIp)
    }

    #[test]
    fn defaults() {
        let (c, e) = parse("");
        assert!(e.is_empty());
        assert_eq!(c, Config::default());
        assert_eq!(c.port, 80);
        assert_eq!(c.loglevel, LogLevel::Info);
        assert_eq!(c.watchdog, None);
    }

    #[test]
    fn every_option() {
        let (c, e) = parse(
            "ip=10.0.0.2/24 gw=10.0.0.1 ip6=fd00::2/64 dns=10.0.0.1,fd00::1 port=8080 \
             max_conns=8 max_value=64K watchdog=10 loglevel=debug debug_hang_after=30 debugcon \
             evtchn=fifo",
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            c.ip,
            Some(Ipv4Cidr {
                addr: Ipv4Addr::new(10, 0, 0, 2),
                prefix: 24
            })
        );
        assert_eq!(c.gw, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.ip6.map(|a| a.prefix), Some(64));
        assert_eq!(
            c.ip6.map(|a| a.addr),
            Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2))
        );
        assert_eq!(c.dns.len(), 2);
        assert_eq!(c.port, 8080);
        assert_eq!(c.max_conns, Some(8));
        assert_eq!(c.max_value, Some(65536));
        assert_eq!(c.watchdog, Some(10));
        assert_eq!(c.loglevel, LogLevel::Debug);
        assert_eq!(c.debug_hang_after, Some(30));
        assert!(c.debugcon);
        let eff = c.effective(65536).join(" ");
        assert!(eff.contains("port=8080"), "{eff}");
        assert!(eff.contains("max_conns=8"), "{eff}");
        assert!(eff.contains("max_value=65536 bytes"), "{eff}");
        assert!(eff.contains("watchdog=10 s"), "{eff}");
        assert!(eff.contains("ip6=fd00::2/64"), "{eff}");
        assert!(eff.contains("TEST ONLY"), "{eff}");
        assert_eq!(c.evtchn, EvtchnAbi::Fifo);
        assert!(eff.contains("evtchn=fifo"), "{eff}");
    }

    #[test]
    fn bench_values() {
        assert_eq!(parse("").0.bench_blk_runs, 0);
        assert_eq!(parse("bench=blk").0.bench_blk_runs, 3);
        assert_eq!(parse("bench=blk:5").0.bench_blk_runs, 5);
        for bad in [
            "bench=net",
            "bench=blk:0",
            "bench=blk:21",
            "bench=blk5",
            "bench=blk:x",
        ] {
            let e = one_error(bad);
            assert!(matches!(e, OptionError::Bench { .. }), "{bad}: {e:?}");
        }
    }

    #[test]
    fn evtchn_values() {
        assert_eq!(parse("").0.evtchn, EvtchnAbi::Auto);
        assert_eq!(parse("evtchn=auto").0.evtchn, EvtchnAbi::Auto);
        assert_eq!(parse("evtchn=2l").0.evtchn, EvtchnAbi::TwoLevel);
        let e = one_error("evtchn=3l");
        assert_eq!(e, OptionError::Evtchn { value: "3l".into() });
        assert!(format!("{e}").contains("expected auto, 2l or fifo"), "{e}");
    }

    #[test]
    fn value_cache_values() {
        assert_eq!(parse("").0.value_cache, None);
        assert_eq!(parse("value_cache=0").0.value_cache, Some(0));
        assert_eq!(parse("value_cache=128K").0.value_cache, Some(128 << 10));
        assert_eq!(parse("value_cache=2m").0.value_cache, Some(2 << 20));
        assert!(parse("value_cache=0")
            .0
            .effective(1)
            .contains(&"value_cache=off".into()));
        assert!(parse("value_cache=1K")
            .0
            .effective(1)
            .contains(&"value_cache=1024 bytes".into()));
        assert!(parse("")
            .0
            .effective(1)
            .iter()
            .any(|l| l.starts_with("value_cache=auto")));
        assert_eq!(
            one_error("value_cache=65M"),
            OptionError::OutOfRange {
                key: "value_cache",
                value: "65M".into(),
                min: 0,
                max: VALUE_CACHE_LIMIT as u64,
            }
        );
        assert!(matches!(
            one_error("value_cache=lots"),
            OptionError::NotANumber { .. }
        ));
    }

    #[test]
    fn max_value_suffixes() {
        assert_eq!(parse("max_value=1M").0.max_value, Some(1 << 20));
        assert_eq!(parse("max_value=123").0.max_value, Some(123));
        assert_eq!(parse("max_value=16m").0.max_value, Some(16 << 20));
        assert_eq!(
            one_error("max_value=17M"),
            OptionError::OutOfRange {
                key: "max_value",
                value: "17M".into(),
                min: 1,
                max: MAX_VALUE_LIMIT as u64
            }
        );
        assert!(matches!(
            one_error("max_value=99999999999999999999999K"),
            OptionError::OutOfRange { .. }
        ));
        assert!(matches!(
            one_error("max_value=1G"),
            OptionError::NotANumber { .. }
        ));
        assert!(matches!(
            one_error("max_value=K"),
            OptionError::NotANumber { .. }
        ));
    }

    #[test]
    fn numeric_errors_keep_defaults_and_say_why() {
        for (tok, want) in [
            ("port=0", "must be in 1..=65535"),
            ("port=65536", "must be in 1..=65535"),
            ("port=http", "not a decimal number"),
            ("port=-1", "not a decimal number"),
            ("port=", "not a decimal number"),
            ("max_conns=0", "must be in 1..=256"),
            ("max_conns=1000", "must be in 1..=256"),
            ("max_value=0", "must be in 1..=16777216"),
            ("watchdog=3601", "must be in 0..=3600"),
            ("watchdog=5s", "not a decimal number"),
        ] {
            let (c, e) = parse(tok);
            assert_eq!(c, Config::default(), "{tok}");
            assert_eq!(e.len(), 1, "{tok}");
            let msg = format!("{}", e[0]);
            assert!(msg.contains(want), "{tok}: {msg}");
            assert!(
                msg.contains(tok),
                "{tok}: the message names the token: {msg}"
            );
        }
    }

    #[test]
    fn watchdog_zero_is_off() {
        let (c, e) = parse("watchdog=0");
        assert!(e.is_empty());
        assert_eq!(c.watchdog, None);
    }

    #[test]
    fn address_errors() {
        for (tok, want) in [
            ("ip=10.0.0.2", AddrError::MissingPrefix),
            ("ip=10.0.0/24", AddrError::FieldCount),
            ("ip=10.0.0.2.1/24", AddrError::FieldCount),
            ("ip=10.0.0.256/24", AddrError::OctetRange(256)),
            ("ip=10.0.0.x/24", AddrError::NotANumber),
            ("ip=10.0.0.2/33", AddrError::PrefixRange(32)),
            ("ip=10.0.0.2/", AddrError::PrefixRange(32)),
            ("ip6=fd00::2", AddrError::MissingPrefix),
            ("ip6=fd00::g/64", AddrError::NotIpv6),
            ("ip6=10.0.0.1/64", AddrError::NotIpv6),
            ("ip6=fd00::2/129", AddrError::PrefixRange(128)),
            ("dns=10.0.0.1,bogus", AddrError::NotANumber),
            ("dns=fd00:::1", AddrError::NotIpv6),
        ] {
            match one_error(tok) {
                OptionError::Address { error, .. } => assert_eq!(error, want, "{tok}"),
                other => panic!("{tok}: {other:?}"),
            }
        }
        assert!(format!("{}", one_error("ip=1.2.3.4")).contains("falling back to DHCP"));
    }

    #[test]
    fn too_many_dns_keeps_the_first_three() {
        let (c, e) = parse("dns=1.1.1.1,2.2.2.2,3.3.3.3,4.4.4.4");
        assert_eq!(e, vec![OptionError::TooManyDns { count: 4 }]);
        assert_eq!(c.dns.len(), 3);
    }

    #[test]
    fn loglevels() {
        assert_eq!(parse("loglevel=warn").0.loglevel, LogLevel::Warn);
        assert_eq!(parse("loglevel=INFO").0.loglevel, LogLevel::Info);
        assert_eq!(parse("loglevel=trace").0.loglevel, LogLevel::Trace);
        let e = one_error("loglevel=error");
        assert!(format!("{e}").contains("always logged"), "{e}");
        assert_eq!(parse("loglevel=off").0.loglevel, LogLevel::Info);
    }

    #[test]
    fn flags_values_and_unknown_tokens() {
        assert_eq!(
            one_error("port"),
            OptionError::MissingValue { key: "port".into() }
        );
        assert_eq!(
            one_error("selftest=1"),
            OptionError::UnexpectedValue {
                token: "selftest=1".into()
            }
        );
        assert_eq!(
            one_error("bogus=1"),
            OptionError::Unknown {
                token: "bogus=1".into()
            }
        );
        let (c, e) = parse("gw=10.0.0.1");
        assert_eq!(e, vec![OptionError::GatewayWithoutIp]);
        assert_eq!(c.gw, None);
        let (c, _) = parse("ip=bad gw=10.0.0.1");
        assert_eq!((c.ip, c.gw), (None, None));
        // The last occurrence wins; a later bad one keeps the earlier good one.
        assert_eq!(parse("port=81 port=82").0.port, 82);
        assert_eq!(parse("port=81 port=x").0.port, 81);
    }

    #[test]
    fn per_interface_addresses() {
        let (c, e) = parse("ip=10.0.0.2/24 gw=10.0.0.1 ip1=10.0.1.2/24 gw2=10.0.2.1 ip2=10.0.2.2/24 ip3=dhcp ip06=10.0.6.2/24 gw6=10.0.6.1");
        assert!(e.is_empty(), "{e:?}");
        let cidr = |a, b, c, d, prefix| Ipv4Cidr {
            addr: Ipv4Addr::new(a, b, c, d),
            prefix,
        };
        assert_eq!(
            c.ipv4(0),
            Ipv4Setting::Static {
                cidr: cidr(10, 0, 0, 2, 24),
                gw: Some(Ipv4Addr::new(10, 0, 0, 1))
            }
        );
        assert_eq!(
            c.ipv4(1),
            Ipv4Setting::Static {
                cidr: cidr(10, 0, 1, 2, 24),
                gw: None
            }
        );
        // gw2= before ip2= is fine: the order of tokens does not matter.
        assert_eq!(
            c.ipv4(2),
            Ipv4Setting::Static {
                cidr: cidr(10, 0, 2, 2, 24),
                gw: Some(Ipv4Addr::new(10, 0, 2, 1))
            }
        );
        assert_eq!(c.ipv4(3), Ipv4Setting::Dhcp);
        assert_eq!(c.ipv4(4), Ipv4Setting::Dhcp);
        assert_eq!(c.ipv4(99), Ipv4Setting::Dhcp);
        assert_eq!(
            c.ipv4(6),
            Ipv4Setting::Static {
                cidr: cidr(10, 0, 6, 2, 24),
                gw: Some(Ipv4Addr::new(10, 0, 6, 1))
            }
        );
        // The interfaces are kept in order of K, one entry each.
        let order: Vec<u8> = c.ifaces.iter().map(|i| i.index).collect();
        assert_eq!(order, vec![1, 2, 3, 6]);
        let eff = c.effective(1).join(" | ");
        assert!(eff.contains("ip=10.0.0.2/24 gw=10.0.0.1"), "{eff}");
        assert!(eff.contains("ip1=10.0.1.2/24 gw1=none"), "{eff}");
        assert!(eff.contains("ip2=10.0.2.2/24 gw2=10.0.2.1"), "{eff}");
        assert!(eff.contains("ip3=dhcp"), "{eff}");
        assert!(eff.contains("ipK=dhcp on every other interface"), "{eff}");
        // ip0= is ip=, ip=dhcp says DHCP explicitly, and ip6= stays IPv6.
        let (c, e) = parse("ip0=10.0.0.9/8 gw0=10.0.0.1 ip6=fd00::2/64");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            (c.ip, c.gw),
            (Some(cidr(10, 0, 0, 9, 8)), Some(Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert!(c.ifaces.is_empty());
        assert!(c.ip6.is_some());
        assert_eq!(parse("ip=10.0.0.2/24 ip=dhcp").0.ip, None);
    }

    #[test]
    fn per_interface_errors() {
        assert_eq!(
            one_error("ip8=10.0.8.2/24"),
            OptionError::IfaceIndex {
                token: "ip8=10.0.8.2/24".into()
            }
        );
        assert!(matches!(
            one_error("gw300=1.2.3.4"),
            OptionError::IfaceIndex { .. }
        ));
        assert!(matches!(
            one_error("ip99999999999999999999=1.2.3.4/8"),
            OptionError::IfaceIndex { .. }
        ));
        let msg = format!("{}", one_error("ip9=1.2.3.4/8"));
        assert!(msg.contains("0..=7"), "{msg}");
        match one_error("ip1=10.0.1.2") {
            OptionError::Address { key, error, .. } => {
                assert_eq!((key, error), ("ip1", AddrError::MissingPrefix))
            }
            other => panic!("{other:?}"),
        }
        match one_error("ip06=10.0.6.300/24") {
            OptionError::Address { key, error, .. } => {
                assert_eq!((key, error), ("ip06", AddrError::OctetRange(300)))
            }
            other => panic!("{other:?}"),
        }
        match one_error("gw2=x") {
            OptionError::Address { key, .. } => assert_eq!(key, "gw2"),
            other => panic!("{other:?}"),
        }
        // A gateway without an address on the same interface is dropped with its own error.
        let (c, e) = parse("ip=10.0.0.2/24 gw3=10.0.3.1");
        assert_eq!(e, vec![OptionError::GatewayWithoutIpOn { iface: 3 }]);
        assert_eq!(c.ipv4(3), Ipv4Setting::Dhcp);
        assert!(format!("{}", e[0]).contains("gw3= given without a valid ip3="));
        // A bad value keeps the earlier good one.
        let (c, _) = parse("ip2=10.0.2.2/24 ip2=bogus");
        assert!(matches!(c.ipv4(2), Ipv4Setting::Static { .. }));
        assert_eq!(
            one_error("ip1"),
            OptionError::MissingValue { key: "ip1".into() }
        );
        // Not interface options: unknown tokens.
        assert!(matches!(one_error("ipx=1"), OptionError::Unknown { .. }));
        assert!(matches!(
            one_error("ip-1=1.2.3.4/8"),
            OptionError::Unknown { .. }
        ));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "=",
            "==",
            "ip==",
            "ip=/",
            "ip6=/",
            "dns=,",
            "dns=",
            "max_value=\u{0665}",
            "port=\u{0661}",
            "\u{00e9}=\u{00e9}",
            "max_value=18446744073709551615M",
            "ip1=",
            "gw7=",
            "ip255=",
            "ip256=",
            "ip6=",
            "ip0=dhcp",
        ] {
            let _ = parse(s);
        }
    }
}
