//! `xen-net`: a Xen PV network frontend as a Linux program.
//!
//! It attaches to a vif (`device/vif/<id>` in this domain's xenstore home) that no kernel driver
//! has claimed, using the unchanged `xen-netfront` crate over `/dev/xen/gntalloc`,
//! `/dev/xen/evtchn` and `/dev/xen/xenbus`, brings it up with smoltcp (a static IPv4 address),
//! runs one command and detaches. See `xen-net --help`.

use std::io::Write;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
use xen_blk::device;
use xen_event_channel_linux::{EventChannels, LinuxEventChannels, MonotonicClock};
use xen_grant_table_linux::GrantAccess;
use xen_net::ops::{self, Endpoint};
use xen_net::services::{self, NetDev};
use xen_net::{NetCliError, Stack};

/// A Xen PV network frontend in userspace (netfront over /dev/xen, smoltcp on top).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The vif id (`device/vif/<ID>`); default: the only vif no one has connected.
    #[arg(long, global = true)]
    vif: Option<String>,
    /// Longest wait, in seconds, for the backend during attach/detach, and for a whole command.
    #[arg(long, global = true, default_value_t = 60)]
    timeout: u64,
    /// Print what happens (attach, detach, leak counts) on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

/// The interface's address.
#[derive(Debug, Args)]
struct Ip {
    /// Our IPv4 address with its prefix length, e.g. 10.0.0.50/24.
    #[arg(long, value_parser = parse_cidr)]
    ip: Ipv4Cidr,
    /// Default gateway.
    #[arg(long)]
    gateway: Option<Ipv4Address>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the vifs of this domain with the frontend and backend states (does not attach).
    List,
    /// Attach and print the MAC, MTU, backend and negotiated features.
    Info,
    /// Send ICMP echo requests to a host; exit status 1 when no reply came.
    Ping {
        #[command(flatten)]
        ip: Ip,
        /// The host to ping.
        host: Ipv4Address,
        /// Number of requests.
        #[arg(long, short, default_value_t = 3)]
        count: u16,
        /// Milliseconds between requests.
        #[arg(long, default_value_t = 200)]
        interval_ms: u64,
    },
    /// One TCP connection (client with --connect, server with --listen) that sends a file
    /// and/or saves what arrives; prints the byte counts and the rate.
    Tcp {
        #[command(flatten)]
        ip: Ip,
        /// Connect to ADDR:PORT.
        #[arg(long, conflicts_with = "listen", required_unless_present = "listen")]
        connect: Option<SocketAddrV4>,
        /// Wait for one connection on PORT.
        #[arg(long)]
        listen: Option<u16>,
        /// Send this file (then close our side).
        #[arg(long)]
        send: Option<PathBuf>,
        /// Save what arrives in this file (until the peer closes).
        #[arg(long)]
        recv: Option<PathBuf>,
        /// Local port of a client (default: 49152 + pid % 16384).
        #[arg(long)]
        local_port: Option<u16>,
    },
}

/// `A.B.C.D/N` with N in 0..=32.
fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    let (a, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected ADDRESS/PREFIX, e.g. 10.0.0.50/24"))?;
    let a: Ipv4Address = a.parse().map_err(|e| format!("{a:?}: {e}"))?;
    let n: u8 = n
        .parse()
        .ok()
        .filter(|n| *n <= 32)
        .ok_or_else(|| format!("{n:?}: the prefix length must be 0..=32"))?;
    Ok(Ipv4Cidr::new(a, n))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    xen_blk::cli::init_logger("xen-net", cli.verbose);
    xen_blk::cli::exit("xen-net", run(&cli), NetCliError::exit_code)
}

fn run(cli: &Cli) -> Result<(), NetCliError> {
    let timeout = Duration::from_secs(cli.timeout.max(1));
    let clock = Arc::new(MonotonicClock::new());
    let store = services::open_store(&clock)?;
    if let Command::List = cli.command {
        for l in services::list(&store)? {
            println!("{l}");
        }
        return Ok(());
    }
    let id = services::pick_vif(&store, cli.vif.as_deref())?;
    let (grants, events) = services::open_devices(Duration::from_secs(1), &clock)?;
    let dev = services::attach(
        grants,
        events.clone(),
        store,
        &clock,
        &id,
        services::config(),
        timeout,
    )?;
    if cli.verbose {
        let (back, domid) = dev.backend();
        eprintln!(
            "xen-net: attached vif {id} (backend {back} in domain {domid}): {:?}",
            dev.features()
        );
    }
    let (result, mut dev) = command(cli, dev, &events, timeout);
    let detached = dev.disconnect();
    let held = (dev.grants().refs_in_use(), events.open_ports());
    let stats = format!("{:?}", dev.total_stats());
    let released = device::report_detach("xen-net", "vif", &id, held, cli.verbose, &stats);
    result?;
    detached?;
    released.map_err(NetCliError::Setup)
}

/// Runs the command; gives the device back in every case so that it is detached.
fn command(
    cli: &Cli,
    dev: NetDev,
    events: &Arc<LinuxEventChannels>,
    timeout: Duration,
) -> (Result<(), NetCliError>, NetDev) {
    let ip = match &cli.command {
        Command::List => return (Ok(()), dev),
        Command::Info => return (info(&dev), dev),
        Command::Ping { ip, .. } | Command::Tcp { ip, .. } => ip,
    };
    let mut stack = match Stack::new(dev, events.clone(), ip.ip, ip.gateway) {
        Ok(s) => s,
        Err((e, dev)) => return (Err(e), dev),
    };
    let r = match &cli.command {
        Command::Ping {
            host,
            count,
            interval_ms,
            ..
        } => ping(&mut stack, *host, *count, *interval_ms),
        Command::Tcp {
            connect,
            listen,
            send,
            recv,
            local_port,
            ..
        } => tcp(
            &mut stack,
            *connect,
            *listen,
            send.as_ref(),
            recv.as_ref(),
            *local_port,
            timeout,
        ),
        Command::List | Command::Info => Ok(()),
    };
    (r, stack.into_device())
}

fn info(dev: &NetDev) -> Result<(), NetCliError> {
    let m = dev.mac();
    let (back, domid) = dev.backend();
    println!("vif {}", dev.node());
    println!(
        "mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    );
    println!("mtu {}", dev.mtu());
    println!("backend {back} domid {domid}");
    let f = dev.features();
    println!("queues {}", f.num_queues);
    println!(
        "sg {} gso_tcpv4 {} tx_csum_offload {} rx_csum_offload {} split_event_channels {}",
        f.sg, f.gso_tcpv4, f.tx_csum_offload, f.rx_csum_offload, f.split_event_channels
    );
    Ok(())
}

type LinuxStack =
    Stack<xen_grant_table_linux::Gntalloc, services::Events, services::Store, LinuxEventChannels>;

fn ping(
    stack: &mut LinuxStack,
    host: Ipv4Address,
    count: u16,
    interval_ms: u64,
) -> Result<(), NetCliError> {
    if count == 0 {
        return Err(NetCliError::Usage("--count must be at least 1".into()));
    }
    let me = stack.address().map(|a| a.to_string()).unwrap_or_default();
    println!("PING {host} from {me}: {count} request(s)");
    let report = ops::ping(
        stack,
        host,
        count,
        Duration::from_millis(interval_ms),
        |seq, rtt| {
            println!(
                "reply from {host}: seq={seq} time={:.3} ms",
                rtt.as_secs_f64() * 1e3
            );
        },
    )?;
    let n = report.replies.len();
    let avg = if n == 0 {
        0.0
    } else {
        report
            .replies
            .iter()
            .map(|r| r.1.as_secs_f64())
            .sum::<f64>()
            * 1e3
            / n as f64
    };
    println!(
        "ping: sent {} received {} avg_rtt_ms {avg:.3}",
        report.sent, n
    );
    if n == 0 {
        return Err(NetCliError::Peer(format!("no echo reply from {host}")));
    }
    Ok(())
}

fn tcp(
    stack: &mut LinuxStack,
    connect: Option<SocketAddrV4>,
    listen: Option<u16>,
    send: Option<&PathBuf>,
    recv: Option<&PathBuf>,
    local_port: Option<u16>,
    timeout: Duration,
) -> Result<(), NetCliError> {
    let end = match (connect, listen) {
        (Some(a), None) => Endpoint::Connect(*a.ip(), a.port()),
        (None, Some(p)) => Endpoint::Listen(p),
        _ => {
            return Err(NetCliError::Usage(
                "give one of --connect and --listen".into(),
            ))
        }
    };
    let data = match send {
        Some(p) => {
            std::fs::read(p).map_err(|e| NetCliError::File(format!("{}: {e}", p.display())))?
        }
        None => Vec::new(),
    };
    let mut out = match recv {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p)
                .map_err(|e| NetCliError::File(format!("{}: {e}", p.display())))?,
        )),
        None => None,
    };
    let local = local_port.unwrap_or(49152 + (std::process::id() % 16384) as u16);
    let t = ops::tcp(
        stack,
        end,
        local,
        &data,
        out.as_mut().map(|w| w as &mut dyn Write),
        timeout,
    )?;
    let secs = t.elapsed.as_secs_f64();
    let mib_s = if secs > 0.0 {
        (t.sent + t.received) as f64 / (1024.0 * 1024.0) / secs
    } else {
        0.0
    };
    let peer = t.peer.map(|(a, p)| format!("{a}:{p}")).unwrap_or_default();
    println!(
        "tcp: peer {peer} sent_bytes {} recv_bytes {} seconds {secs:.3} mib_s {mib_s:.2}",
        t.sent, t.received
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn commands_parse() {
        let c = Cli::try_parse_from([
            "xen-net",
            "--vif",
            "1",
            "ping",
            "--ip",
            "10.0.0.50/24",
            "10.0.0.1",
        ])
        .unwrap();
        assert_eq!(c.vif.as_deref(), Some("1"));
        assert!(matches!(c.command, Command::Ping { count: 3, .. }));
        let c = Cli::try_parse_from([
            "xen-net",
            "tcp",
            "--ip",
            "10.0.0.50/24",
            "--listen",
            "7000",
            "--send",
            "f",
        ])
        .unwrap();
        assert!(matches!(
            c.command,
            Command::Tcp {
                listen: Some(7000),
                ..
            }
        ));
        // Usage errors, not panics.
        assert!(Cli::try_parse_from(["xen-net", "ping", "10.0.0.1"]).is_err());
        assert!(Cli::try_parse_from(["xen-net", "ping", "--ip", "10.0.0.50", "10.0.0.1"]).is_err());
        assert!(Cli::try_parse_from(["xen-net", "tcp", "--ip", "10.0.0.50/24"]).is_err());
        assert!(Cli::try_parse_from([
            "xen-net",
            "tcp",
            "--ip",
            "10.0.0.50/24",
            "--listen",
            "1",
            "--connect",
            "10.0.0.1:2"
        ])
        .is_err());
    }
}
