//! `xen-blk`: a Xen PV block frontend as a Linux program.
//!
//! It attaches to a virtual block device (`device/vbd/<id>` in this domain's xenstore home) that no
//! kernel driver has claimed, using the unchanged `xen-blkfront` crate over `/dev/xen/gntalloc`,
//! `/dev/xen/evtchn` and `/dev/xen/xenbus`, runs one command and detaches. See `xen-blk --help`.

mod bench;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use xen_blkfront::{list_devices, BlockDevice, IoRequest};
use xen_event_channel_linux::{EventChannels, MonotonicClock};
use xen_grant_table_linux::GrantAccess;

use xen_blk::services::LinuxRunner;
use xen_blk::{device, services, CliError, Runner};

/// A Xen PV block frontend in userspace (blkfront over /dev/xen).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The vbd id (`device/vbd/<ID>`, e.g. 51728 for xvdb); default: the only vbd no one
    /// has connected.
    #[arg(long, global = true)]
    vbd: Option<String>,
    /// Longest wait, in seconds, for the backend during attach/detach and for any response.
    #[arg(long, global = true, default_value_t = 60)]
    timeout: u64,
    /// Print what happens (attach, negotiated features, detach) on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the vbds of this domain with the frontend and backend states (does not attach).
    List,
    /// Attach and print the disk's properties and the negotiated features.
    Info,
    /// Read blocks to a file (or stdout).
    Read {
        /// First block.
        #[arg(long, default_value_t = 0)]
        lba: u64,
        /// Number of blocks.
        #[arg(long)]
        blocks: u64,
        /// Output file (default: stdout).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Write a file (whole blocks) at a block address.
    Write {
        /// First block.
        #[arg(long, default_value_t = 0)]
        lba: u64,
        /// Input file (default: stdin); its length must be a multiple of the block size.
        #[arg(long, short)]
        input: Option<PathBuf>,
        /// Flush the disk's cache after writing.
        #[arg(long)]
        flush: bool,
    },
    /// Read blocks and compare them with a file; exit status 1 on a difference.
    Verify {
        /// First block.
        #[arg(long, default_value_t = 0)]
        lba: u64,
        /// The expected contents (whole blocks).
        #[arg(long, short)]
        input: PathBuf,
    },
    /// Flush the disk's write cache.
    Flush,
    /// Discard blocks (rounded inward to the backend's discard granularity).
    Discard {
        /// First block.
        #[arg(long)]
        lba: u64,
        /// Number of blocks.
        #[arg(long)]
        blocks: u64,
    },
    /// Measure sequential MiB/s and 4 KiB random-read IOPS at QD1 and QD32 (OVERWRITES the
    /// region it uses).
    Bench(bench::BenchArgs),
}

/// Requests kept in flight by read/write/verify.
const DEPTH: usize = 8;
/// Blocks per request of read/write/verify: 128 KiB.
const CHUNK_BYTES: usize = 128 * 1024;

fn main() -> ExitCode {
    let cli = Cli::parse();
    xen_blk::cli::init_logger("xen-blk", cli.verbose);
    xen_blk::cli::exit("xen-blk", run(&cli), CliError::exit_code)
}

/// The vbd to use: `--vbd`, else the only one whose frontend is not Connected.
fn pick_vbd(cli: &Cli, store: &services::Store) -> Result<String, CliError> {
    if let Some(v) = &cli.vbd {
        return Ok(v.clone());
    }
    device::pick_unclaimed(store, "vbd", list_devices(store)?, "xl block-attach 0 ...")
        .map_err(CliError::Usage)
}

fn list(store: &services::Store) -> Result<(), CliError> {
    for id in list_devices(store)? {
        println!("{id} {}", device::describe(store, "vbd", &id));
    }
    Ok(())
}

fn read_input(path: Option<&PathBuf>) -> Result<Vec<u8>, CliError> {
    let mut data = Vec::new();
    match path {
        Some(p) => {
            data = std::fs::read(p).map_err(|e| CliError::File(format!("{}: {e}", p.display())))?
        }
        None => {
            std::io::stdin()
                .read_to_end(&mut data)
                .map_err(|e| CliError::File(format!("stdin: {e}")))?;
        }
    }
    Ok(data)
}

fn run(cli: &Cli) -> Result<(), CliError> {
    let timeout = Duration::from_secs(cli.timeout.max(1));
    let clock = Arc::new(MonotonicClock::new());
    let store = services::open_store(&clock)?;
    if let Command::List = cli.command {
        return list(&store);
    }
    let id = pick_vbd(cli, &store)?;
    let (grants, events) = services::open_devices(Duration::from_secs(1), &clock)?;
    let mut dev = services::attach(
        grants,
        events.clone(),
        store.clone(),
        &clock,
        &id,
        services::config(),
        timeout,
    )?;
    let result = command(cli, &mut dev, &events, timeout);
    let detached = dev.disconnect();
    let held = (dev.grants().refs_in_use(), events.open_ports());
    let released = device::report_detach("xen-blk", "vbd", &id, held, cli.verbose, "");
    result?;
    detached?;
    released.map_err(CliError::Setup)
}

fn command(
    cli: &Cli,
    dev: &mut services::Dev,
    ev: &services::Events,
    timeout: Duration,
) -> Result<(), CliError> {
    let bs = dev.block_size();
    let mut r = Runner {
        dev,
        ev: ev.as_ref(),
        timeout,
    };
    match &cli.command {
        Command::List => Ok(()),
        Command::Info => {
            let i = *r.dev.info();
            let f = *r.dev.features();
            println!("vbd {}", r.dev.node());
            println!("sectors {}", i.sectors);
            println!("sector_size {}", i.sector_size);
            println!("physical_sector_size {}", i.physical_sector_size);
            println!("bytes {}", i.sectors * 512);
            println!("read_only {}", i.read_only);
            println!("backend_domid {}", i.backend_domid);
            println!(
                "queues {} ring_slots {} ring_page_order {}",
                f.queues, f.ring_size, f.ring_page_order
            );
            println!("persistent_grants {}", f.persistent);
            println!("indirect_segments {}", f.indirect_segments);
            println!("flush_cache {} barrier {}", f.flush_cache, f.barrier);
            match f.discard {
                Some(d) => println!(
                    "discard granularity {} alignment {} secure {}",
                    d.granularity, d.alignment, d.secure
                ),
                None => println!("discard no"),
            }
            Ok(())
        }
        Command::Read { lba, blocks, out } => {
            let mut sink: Box<dyn Write> = match out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .map_err(|e| CliError::File(format!("{}: {e}", p.display())))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            read_range(&mut r, bs, *lba, *blocks, |data| {
                sink.write_all(data)
                    .map_err(|e| CliError::File(format!("writing the output: {e}")))
            })?;
            sink.flush()
                .map_err(|e| CliError::File(format!("writing the output: {e}")))
        }
        Command::Write { lba, input, flush } => {
            let data = read_input(input.as_ref())?;
            if data.is_empty() || data.len() % bs != 0 {
                return Err(CliError::Usage(format!(
                    "the input has {} bytes, not a positive multiple of the block size {bs}",
                    data.len()
                )));
            }
            write_range(&mut r, bs, *lba, &data)?;
            if *flush {
                r.run_one(IoRequest::Flush)?;
            }
            Ok(())
        }
        Command::Verify { lba, input } => {
            let want = read_input(Some(input))?;
            if want.is_empty() || want.len() % bs != 0 {
                return Err(CliError::Usage(format!(
                    "{} has {} bytes, not a positive multiple of the block size {bs}",
                    input.display(),
                    want.len()
                )));
            }
            let mut at = 0usize;
            let mut mismatch = None;
            read_range(&mut r, bs, *lba, (want.len() / bs) as u64, |data| {
                if mismatch.is_none() {
                    if let Some(i) = data.iter().zip(&want[at..]).position(|(a, b)| a != b) {
                        mismatch = Some(at + i);
                    }
                }
                at += data.len();
                Ok(())
            })?;
            match mismatch {
                None => {
                    println!("verify: {} bytes match", want.len());
                    Ok(())
                }
                Some(off) => Err(CliError::Mismatch(format!(
                    "first difference at byte {off} (block {})",
                    *lba + (off / bs) as u64
                ))),
            }
        }
        Command::Flush => {
            let f = *r.dev.features();
            r.run_one(IoRequest::Flush)?;
            if f.flush_cache || f.barrier {
                println!("flush: done");
            } else {
                println!("flush: the backend has no volatile cache (nothing to flush)");
            }
            Ok(())
        }
        Command::Discard { lba, blocks } => {
            r.run_one(IoRequest::Discard {
                lba: *lba,
                blocks: *blocks,
                secure: false,
            })?;
            println!("discard: done");
            Ok(())
        }
        Command::Bench(args) => bench::run(&mut r, bs, args),
    }
}

/// Reads `blocks` blocks from `lba` in order, `DEPTH` requests in flight; `sink` gets the data in
/// disk order.
fn read_range(
    r: &mut LinuxRunner<'_>,
    bs: usize,
    lba: u64,
    blocks: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let chunk = (CHUNK_BYTES / bs).max(1) as u64;
    let n = blocks.div_ceil(chunk);
    // Finished chunks waiting for their predecessors (at most DEPTH of them).
    let mut waiting: std::collections::BTreeMap<usize, Vec<u8>> = Default::default();
    let mut next_out = 0usize;
    r.pipeline(
        DEPTH,
        |i| {
            let i = i as u64;
            (i < n).then(|| IoRequest::Read {
                lba: lba + i * chunk,
                blocks: chunk.min(blocks - i * chunk),
            })
        },
        |i, c| {
            waiting.insert(i, c.data.unwrap_or_default());
            while let Some(d) = waiting.remove(&next_out) {
                sink(&d)?;
                next_out += 1;
            }
            Ok(())
        },
    )
}

/// Writes `data` (whole blocks) at `lba`, `DEPTH` requests in flight.
fn write_range(r: &mut LinuxRunner<'_>, bs: usize, lba: u64, data: &[u8]) -> Result<(), CliError> {
    let chunk_bytes = (CHUNK_BYTES / bs).max(1) * bs;
    let chunks: Vec<&[u8]> = data.chunks(chunk_bytes).collect();
    let per = (chunk_bytes / bs) as u64;
    r.pipeline(
        DEPTH,
        |i| {
            chunks.get(i).map(|d| IoRequest::Write {
                lba: lba + i as u64 * per,
                data: d,
                fua: false,
            })
        },
        |_, _| Ok(()),
    )
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
        let c =
            Cli::try_parse_from(["xen-blk", "--vbd", "51728", "read", "--blocks", "8"]).unwrap();
        assert_eq!(c.vbd.as_deref(), Some("51728"));
        assert!(matches!(
            c.command,
            Command::Read {
                lba: 0,
                blocks: 8,
                out: None
            }
        ));
        let c = Cli::try_parse_from(["xen-blk", "discard", "--lba", "5", "--blocks", "9"]).unwrap();
        assert!(matches!(c.command, Command::Discard { lba: 5, blocks: 9 }));
        // Missing required values are usage errors, not panics.
        assert!(Cli::try_parse_from(["xen-blk", "read"]).is_err());
        assert!(
            Cli::try_parse_from(["xen-blk", "discard", "--lba", "x", "--blocks", "1"]).is_err()
        );
        assert!(Cli::try_parse_from(["xen-blk", "bench", "--mib", "4", "--seconds", "0"]).is_ok());
    }
}
