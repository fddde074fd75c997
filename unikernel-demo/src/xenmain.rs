//! The Xen main loop: grant table and xenstore up, every vif and vbd connected (netfront,
//! blkfront), the key-value server on every vif (one interface each, see [`crate::vifs`]) with
//! its store on the first vbd, control/shutdown handled.

use crate::app::{App, NetCounters};
use crate::cmdline::Config;
use crate::disk::{Disk, XenBlk};
use crate::vifs::Vifs;
use crate::xen::suspend::Outcome;
use crate::xen::{self, KernelClock, KernelEvents};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use xen_hypercall::abi::sched::ShutdownReason;
use xen_netfront::{Netfront, NetfrontConfig};
use xen_store::xenbus::Resume;
use xen_store::{xenbus, Store, TxId};

/// The netfront type of the kernel.
pub type XenNet = Netfront<&'static xen::Grants, KernelEvents, &'static xen::XenStore>;

const SHUTDOWN_TOKEN: &str = "control/shutdown";

fn net_config() -> NetfrontConfig {
    // Small pools: the guest should serve in a few MiB.
    NetfrontConfig {
        max_queues: 1,
        tx_buffers: 64,
        rx_buffers: 64,
        // No GSO: with `feature-gso-tcpv4` netback may hand us TCP segments of up to 64 KiB,
        // far more than smoltcp's 4-16 KiB receive windows (dropped, then retransmitted one MSS
        // at a time); smoltcp never sends GSO frames either.
        gso_tcpv4: false,
        // Connects do not block the main loop (see `vifs`): give the backend's hotplug script
        // time (it took ~30 s in the nested harness under load).
        timeouts: xen_store::xenbus::Timeouts {
            connect_ns: 120_000_000_000,
            ..xen_store::xenbus::Timeouts::default()
        },
        ..NetfrontConfig::default()
    }
}

fn blk_config() -> xen_blkfront::Config {
    xen_blkfront::Config {
        max_queues: 1,
        max_pool_pages: 128,
        ..xen_blkfront::Config::default()
    }
}

fn counters(n: &XenNet) -> NetCounters {
    let s = n.total_stats();
    NetCounters {
        tx_packets: s.tx_packets,
        tx_bytes: s.tx_bytes,
        rx_packets: s.rx_packets,
        rx_bytes: s.rx_bytes,
        errors: s.tx_errors + s.rx_errors,
        tx_lost: s.tx_lost,
    }
}

/// Brings up the devices and serves until control/shutdown says otherwise. Never returns.
pub fn run(cfg: &Config) -> ! {
    let grants = match xen::init_grants() {
        Ok(g) => g,
        Err(e) => panic!("grant table setup failed: {e}"),
    };
    crate::println!(
        "xen: grant table up ({} frames, {} entries)",
        grants.nr_frames(),
        grants.capacity()
    );
    let store = match xen::init_store() {
        Ok(s) => s,
        Err(e) => panic!("xenstore connection failed: {e}"),
    };
    // Both in one round trip to xenstored (milliseconds each under nested Xen).
    let mut ids = store
        .batch(
            TxId::NONE,
            &[
                xen_store::BatchOp::Read("name"),
                xen_store::BatchOp::Read("domid"),
            ],
        )
        .into_iter()
        .map(|r| {
            r.map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default()
        });
    let name = ids.next().unwrap_or_default();
    let domid = ids.next().unwrap_or_default();
    crate::println!(
        "xen: xenstore connected (port {}); domain {domid} \"{name}\"",
        store.port()
    );

    // Tell the toolstack we handle control/shutdown, then watch it.
    control_setup(store);

    let vifs = xenbus::list_devices(store, "vif").unwrap_or_default();
    let vbds = xenbus::list_devices(store, "vbd").unwrap_or_default();
    crate::println!("xen: devices in xenstore: vif {vifs:?}, vbd {vbds:?}");

    let clock: xen_store::xenbus::SharedClock = Arc::new(KernelClock);
    let (rt0, req0) = store.counts();
    let mut vifs = Vifs::boot(grants, store, clock.clone(), net_config());
    let (rt1, req1) = store.counts();
    crate::println!(
        "xen: vif(s) started: {} xenstore round trips, {} requests (before: {rt0} and {req0})",
        rt1 - rt0,
        req1 - req0
    );

    let (mut disks, connected_vbds) = connect_vbds(grants, store, &clock, &vbds);

    if cfg.bench_blk_runs > 0 {
        crate::benchmode::run_blk(&mut disks, cfg.bench_blk_runs);
    }

    let disk = if disks.is_empty() {
        crate::println!("kv: no disk connected; using a 4 MiB RAM disk (values will not persist)");
        ("ramdisk".into(), Disk::Mem(kv_app::MemDisk::new(512, 8192)))
    } else {
        disks.remove(0)
    };
    // From now on vbds come and go (xl block-attach / block-detach): see xen::vbds.
    let mut vbd_set = crate::xen::vbds::Vbds::new(
        grants,
        store,
        blk_config(),
        &connected_vbds,
        connected_vbds
            .first()
            .cloned()
            .filter(|_| disk.0 != "ramdisk"),
        disk.0.clone(),
    );

    let mut app = match App::new(disk.1, cfg) {
        Ok(mut a) => {
            vifs.attach_all(&mut a);
            if vifs.members().next().is_none() {
                crate::println!(
                    "net: no network device yet; serving on every vif that gets attached"
                );
            }
            Some(a)
        }
        Err(e) => {
            crate::println!("kv: cannot start: {e}");
            None
        }
    };
    if disk.0 == "ramdisk" {
        if let Some(a) = app.as_mut() {
            a.stats.problem = Some("no disk connected: values are on a RAM disk".into());
        }
    }
    let mut watchdog = cfg
        .watchdog
        .and_then(|s| match crate::watchdog::Watchdog::arm(s) {
            Ok(w) => {
                crate::println!("watchdog: armed (id {}, {s} s)", w.id());
                Some(w)
            }
            Err(e) => {
                log::error!("watchdog: SCHEDOP_watchdog({s} s) failed: {e}; running without it");
                None
            }
        });

    loop {
        crate::watchdog::maybe_hang(cfg.debug_hang_after);
        let generation = xen::event_generation();
        let mut deadline = None;
        if let Some(a) = app.as_mut() {
            a.stats.nets = vifs
                .members()
                .map(|(id, d)| (crate::vifs::name(id), counters(d)))
                .collect();
            a.stats.blks = alloc::vec![(vbd_set.name().into(), a.store.device().counters)];
            a.stats.events = xen::upcalls();
            a.stats.gauges = gauges(&vifs, a.store.device(), grants);
            deadline = vifs
                .poll(a)
                .map(|d| crate::time::now_ns() + d.total_micros() * 1000);
        }
        // Watch events: shutdown requests and netfront backend state changes, each taken by its
        // token (never blocking); a blkfront's events stay queued for its own blocking calls.
        let now = xen_store::Deadline::now(&KernelClock);
        while let Ok(Some(_)) = store.wait_watch_until(SHUTDOWN_TOKEN, now) {
            match shutdown_request(store) {
                Some(ShutdownReason::Suspend) => {
                    let how = suspend_resume(
                        store,
                        &mut app,
                        &mut vifs,
                        &mut disks,
                        &mut vbd_set,
                        &mut watchdog,
                        cfg.watchdog,
                    );
                    if how == Resume::NewDomain {
                        vbd_set.rewatch();
                    }
                }
                Some(reason) => shutdown(reason, &mut app, &mut vifs, disks),
                None => {}
            }
        }
        // vifs attached or detached, and their backends' states: interfaces follow.
        vifs.handle_events(app.as_mut());
        // The store's disk going away (xl block-detach) makes the store answer 503 until a disk
        // is attached again; vbds attached at run time are noticed (xen::vbds).
        if let Some(a) = app.as_mut() {
            vbd_set.poll(a);
        }
        let feed = watchdog.as_mut().map(|w| w.feed());
        let hang = crate::watchdog::hang_deadline(cfg.debug_hang_after);
        let deadline = [deadline, feed, hang, vbd_set.deadline_ns()]
            .into_iter()
            .flatten()
            .min();
        xen::block_until(deadline, generation);
    }
}

/// Ring occupancy per device, grants and event channels in use (gauges for `/metrics`).
fn gauges(
    vifs: &Vifs,
    disk: &crate::app::Counted<Disk>,
    grants: &xen::Grants,
) -> Vec<crate::app::Gauges> {
    let mut out = Vec::new();
    for (id, d) in vifs.members() {
        let (tx, rx) = d.ring_in_flight();
        out.push((
            crate::vifs::name(id),
            alloc::vec![
                ("ring_tx_in_flight", u64::from(tx)),
                ("ring_rx_posted", u64::from(rx))
            ],
        ));
    }
    if let Disk::Xen(b) = &disk.inner {
        out.push((
            format!("vbd-{}", b.node().rsplit('/').next().unwrap_or("?")),
            alloc::vec![(
                "ring_requests_in_flight",
                b.ring_requests_in_flight() as u64
            )],
        ));
    }
    out.push((
        "xen".into(),
        alloc::vec![
            (
                "grants_in_use",
                xen_grant_table::GrantAccess::refs_in_use(&grants) as u64
            ),
            (
                "event_channels_open",
                xen_event_channel::EventChannels::open_ports(&KernelEvents) as u64
            ),
        ],
    ));
    out
}

/// Connects every vbd of the boot at the same time: each blkfront is probed and its connect
/// started without blocking ([`xen_blkfront::BlkFront::start_connect`]: rings granted and
/// published as soon as its backend waits), then each is settled in turn. Their backends (and
/// the netfronts' ones, started before by [`Vifs::boot`]) do their work at the same time instead
/// of one after the other. Returns the connected disks (`vbd<id>`) and their ids, in xenstore's
/// order; a vbd that fails is reported and left out.
fn connect_vbds(
    grants: &'static xen::Grants,
    store: &'static xen::XenStore,
    clock: &xen_store::xenbus::SharedClock,
    ids: &[String],
) -> (Vec<(String, Disk)>, Vec<String>) {
    let t0 = crate::time::now_ms();
    let (rt0, req0) = store.counts();
    let mut started = Vec::new();
    for id in ids {
        let b = xen_blkfront::BlkFront::new(
            grants,
            KernelEvents,
            store,
            clock.clone(),
            id,
            blk_config(),
        )
        .and_then(|mut b| b.start_connect().map(|_| b));
        match b {
            Ok(b) => started.push((id.clone(), b)),
            Err(e) => crate::println!("blkfront vbd/{id}: failed: {e}"),
        }
    }
    let t_started = crate::time::now_ms();
    let (rt_started, _) = store.counts();
    let mut disks = Vec::new();
    let mut connected = Vec::new();
    for (id, mut b) in started {
        // `connect` on a device whose connect was started finishes it (blocking, bounded by the
        // connect deadline).
        if let Err(e) = b.connect() {
            crate::println!("blkfront vbd/{id}: failed: {e}");
            continue;
        }
        let info = *b.info();
        crate::println!(
            "blkfront vbd/{id}: connected in {} ms, {} sectors of {} bytes ({} MiB){}, features {:?}",
            crate::time::now_ms() - t0,
            info.sectors,
            info.sector_size,
            info.sectors * 512 / (1 << 20),
            if kv_app::BlockDevice::read_only(&b) { ", read-only" } else { "" },
            b.features()
        );
        connected.push(id.clone());
        disks.push((format!("vbd{id}"), Disk::Xen(Box::new(b))));
    }
    if !ids.is_empty() {
        let (rt, req) = store.counts();
        crate::println!(
            "xen: {} of {} vbd(s) connected concurrently in {} ms (all started after {} ms); \
             xenstore: {} round trips ({} to start them), {} requests",
            connected.len(),
            ids.len(),
            crate::time::now_ms() - t0,
            t_started - t0,
            rt - rt0,
            rt_started - rt0,
            req - req0
        );
    }
    (disks, connected)
}

/// Advertises the control/shutdown requests we handle and watches the node (at boot, and again
/// after a resume: the new domain's xenstore has neither our keys nor our watches).
/// The keys and the watch go out as one batch (one round trip to xenstored).
fn control_setup(store: &xen::XenStore) {
    use xen_store::BatchOp as Op;
    let suspend = (!crate::platform::is_pv()).then_some("control/feature-suspend");
    let mut ops: Vec<Op<'_>> = ["control/feature-poweroff", "control/feature-reboot"]
        .into_iter()
        .chain(suspend)
        .map(|k| Op::Write(k, b"1"))
        .collect();
    ops.push(Op::Watch("control/shutdown", SHUTDOWN_TOKEN));
    let results = store.batch(TxId::NONE, &ops);
    if results.len() != ops.len() {
        crate::println!(
            "xen: control setup: {} results for {} requests",
            results.len(),
            ops.len()
        );
    }
    for (op, r) in ops.iter().zip(results) {
        match (op, r) {
            (_, Ok(_)) => {}
            (Op::Watch(..), Err(e)) => crate::println!(
                "xen: cannot watch control/shutdown: {e}; xl shutdown will not work"
            ),
            (Op::Write(k, _) | Op::Read(k) | Op::Rm(k), Err(e)) => {
                crate::println!("xen: cannot write {k}: {e}")
            }
        }
    }
}

/// Reads control/shutdown; acknowledges a request by clearing it (as Linux does).
fn shutdown_request(store: &xen::XenStore) -> Option<ShutdownReason> {
    let v = store.read(TxId::NONE, "control/shutdown").ok()?;
    let v = String::from_utf8_lossy(&v).into_owned();
    let reason = match v.trim_end_matches('\0') {
        "" => return None,
        "poweroff" | "halt" => ShutdownReason::Poweroff,
        "reboot" => ShutdownReason::Reboot,
        // Suspend is implemented for PVH only (a PV guest resumes with a new start_info in rsi).
        "suspend" if !crate::platform::is_pv() => ShutdownReason::Suspend,
        other => {
            crate::println!("control/shutdown: `{other}` is not supported; ignoring it");
            let _ = store.write(TxId::NONE, "control/shutdown", b"");
            return None;
        }
    };
    let _ = store.write(TxId::NONE, "control/shutdown", b"");
    crate::println!("control/shutdown: {v} requested");
    Some(reason)
}

/// Flushes the store, closes every device, then asks Xen to shut the domain down.
fn shutdown(
    reason: ShutdownReason,
    app: &mut Option<App<Disk>>,
    vifs: &mut Vifs,
    disks: Vec<(String, Disk)>,
) -> ! {
    if let Some(a) = app.as_mut() {
        match a.flush() {
            Ok(()) => crate::println!("shutdown: store flushed"),
            Err(e) => crate::println!("shutdown: flush failed: {e}"),
        }
    }
    for (id, d) in vifs.members_mut() {
        match d.disconnect() {
            Ok(()) => crate::println!("shutdown: vif{id} closed"),
            Err(e) => crate::println!("shutdown: vif{id}: {e}"),
        }
    }
    if let Some(a) = app.as_mut() {
        if let Disk::Xen(b) = &mut a.store.device_mut().inner {
            match b.disconnect() {
                Ok(()) => crate::println!("shutdown: store disk {} closed", b.node()),
                Err(e) => crate::println!("shutdown: store disk: {e}"),
            }
        }
    }
    for (name, d) in disks {
        if let Disk::Xen(mut b) = d {
            match b.disconnect() {
                Ok(()) => crate::println!("shutdown: {name} closed"),
                Err(e) => crate::println!("shutdown: {name}: {e}"),
            }
        }
    }
    crate::println!(
        "shutdown: devices closed; deepest boot-stack use {} KiB; SCHEDOP_shutdown({})",
        crate::arch::paging::boot_stack_high_water() / 1024,
        reason.name()
    );
    xen::shutdown(reason);
    panic!("SCHEDOP_shutdown({}) returned", reason.name());
}

/// A frontend of the kernel, as the suspend path sees it.
enum Front<'a> {
    Net(&'a mut XenNet),
    Blk(&'a mut XenBlk),
}

impl Front<'_> {
    fn suspend(&mut self) -> Result<(), String> {
        match self {
            Front::Net(n) => n.suspend().map_err(|e| format!("{e}")),
            Front::Blk(b) => b.suspend().map_err(|e| format!("{e}")),
        }
    }

    fn resume(&mut self, how: Resume) -> Result<(), String> {
        match self {
            Front::Net(n) => n.resume(how).map_err(|e| format!("{e}")),
            Front::Blk(b) => b.resume(how).map_err(|e| format!("{e}")),
        }
    }

    fn resume_begin(&mut self) -> Result<(), String> {
        match self {
            Front::Net(n) => n.resume_begin().map_err(|e| format!("{e}")),
            Front::Blk(b) => b.resume_begin().map_err(|e| format!("{e}")),
        }
    }

    fn resume_finish(&mut self) -> Result<(), String> {
        match self {
            Front::Net(n) => n.resume_finish().map_err(|e| format!("{e}")),
            Front::Blk(b) => b.resume_finish().map_err(|e| format!("{e}")),
        }
    }
}

/// Every frontend, the store's disk first (so the store is back before the network is).
fn fronts<'a>(
    app: &'a mut Option<App<Disk>>,
    vifs: impl Iterator<Item = (u32, &'a mut XenNet)>,
    disks: &'a mut [(String, Disk)],
    disk_name: &str,
) -> Vec<(String, Front<'a>)> {
    let mut out = Vec::new();
    if let Some(a) = app.as_mut() {
        if let Disk::Xen(b) = &mut a.store.device_mut().inner {
            out.push((String::from(disk_name), Front::Blk(b)));
        }
    }
    for (name, d) in disks.iter_mut() {
        if let Disk::Xen(b) = d {
            out.push((name.clone(), Front::Blk(b)));
        }
    }
    for (id, d) in vifs {
        out.push((crate::vifs::name(id), Front::Net(d)));
    }
    out
}

/// Handles `control/shutdown = suspend` (already acknowledged), between two polls of the main
/// loop, so no HTTP request is half done.
///
/// The store's disk is flushed first, so every acknowledged write is on the backend before the
/// memory image is taken, and every frontend is quiesced through its lifecycle (`suspend()`:
/// blkfront keeps unfinished requests, netfront stops its data path), the spare vbds last
/// ([`crate::xen::vbds::Vbds::suspend_spares`]). Then
/// `SCHEDOP_shutdown(SHUTDOWN_suspend)`:
/// - cancelled (`xl save -c`): every frontend goes on with its rings (`Resume::Cancelled`);
/// - resumed in a new domain: the platform is back (see [`xen::suspend`]: shared_info, the FIFO
///   ABI, grant frames, VIRQ_TIMER, xenstore, console); then the *same* frontend objects
///   reconnect (`Resume::NewDomain`), all begun before any is waited for (`resume_begin` /
///   `resume_finish`), so their backends connect at the same time: they forget their void ports
///   without closing them, their old grant regions are freed without touching entries (the grant
///   table's epoch), new rings and persistent grants are granted and blkfront re-issues its
///   unfinished requests in order. smoltcp's interface and sockets (TCP state) never see a new
///   device: clients see a pause. A gratuitous ARP then tells the bridge where we are. Frames
///   still unanswered in netfront's TX ring are dropped and counted (`tx_lost` in `/metrics`);
///   TCP retransmits. The spare vbds begin their reconnect with the others but are not waited
///   for (the main loop's vbd poll finishes it); a spare that was still connecting is probed
///   again. Last, the control node is set up again and the watchdog re-armed.
fn suspend_resume(
    store: &'static xen::XenStore,
    app: &mut Option<App<Disk>>,
    vifs: &mut Vifs,
    disks: &mut [(String, Disk)],
    vbds: &mut crate::xen::vbds::Vbds,
    watchdog: &mut Option<crate::watchdog::Watchdog>,
    watchdog_s: Option<u32>,
) -> Resume {
    let t0 = crate::time::now_ms();
    let disk_name = String::from(vbds.name());
    let disk_name = disk_name.as_str();
    if let Some(a) = app.as_mut() {
        if let Err(e) = a.flush() {
            crate::println!("suspend: store flush failed: {e}");
        }
    }
    // Only the frontends that were quiesced are resumed (a device that was down stays with its
    // own watch-driven reconnect).
    let mut suspended = Vec::new();
    for (name, mut f) in fronts(app, vifs.members_mut(), disks, disk_name) {
        match f.suspend() {
            Ok(()) => suspended.push(name),
            Err(e) => crate::println!("suspend: {name}: {e}; left as it is"),
        }
    }
    let spares = vbds.suspend_spares();
    let (h, f) = (crate::mem::heap_stats(), crate::mem::frame_stats());
    crate::println!(
        "suspend: {} device(s) and {spares} spare vbd(s) quiesced, SCHEDOP_shutdown(suspend); heap {} KiB in {} allocations, {} of {} frames used",
        suspended.len(),
        h.allocated / 1024,
        h.allocations,
        f.used,
        f.total
    );
    let how = match xen::suspend::suspend() {
        Ok(Outcome::Cancelled) => Resume::Cancelled,
        Ok(Outcome::Resumed(r)) => {
            crate::println!(
                "resume: in a new domain; shared_info, grant table, VIRQ_TIMER (port {}), xenstore (port {}), console ({:?}) back",
                r.timer_port,
                r.store_port,
                r.console_port
            );
            crate::println!(
                "resume: pvclock (version, tsc_timestamp, system_time, mul, shift, tsc) {:?}, uptime {} ms",
                crate::time::pvclock_record(),
                crate::time::now_ms()
            );
            Resume::NewDomain
        }
        Err(xen::suspend::SuspendError::Refused(e)) => {
            crate::println!("suspend: Xen refused: {e}; continuing");
            Resume::Cancelled
        }
        Err(e) => panic!("{e}"),
    };
    let t1 = crate::time::now_ms();
    let mut lost_disk = None;
    let mut failed = |name: &str, e: String| {
        crate::println!("resume: {name}: {e}");
        if name == disk_name {
            lost_disk = Some(format!("disk {name} did not come back: {e}"));
        }
    };
    if how == Resume::NewDomain {
        // Every device asks for its new connection before any waits for one, so that their
        // backends connect at the same time (one after the other, each device's xenstore round
        // trips and its backend's work added up).
        let mut begun = Vec::new();
        for (name, mut f) in fronts(app, vifs.members_mut(), disks, disk_name) {
            if suspended.contains(&name) {
                match f.resume_begin() {
                    Ok(()) => begun.push(name),
                    Err(e) => failed(&name, e),
                }
            }
        }
        // The spares' backends connect meanwhile; they are not waited for.
        vbds.resume_spares(how);
        for (name, mut f) in fronts(app, vifs.members_mut(), disks, disk_name) {
            if begun.contains(&name) {
                if let Err(e) = f.resume_finish() {
                    failed(&name, e);
                }
            }
        }
    } else {
        for (name, mut f) in fronts(app, vifs.members_mut(), disks, disk_name) {
            if suspended.contains(&name) {
                if let Err(e) = f.resume(how) {
                    failed(&name, e);
                }
            }
        }
        vbds.resume_spares(how);
    }
    if let (Some(p), Some(a)) = (lost_disk, app.as_mut()) {
        a.stats.problem = Some(p);
    }
    if how == Resume::NewDomain {
        // Every interface announces its addresses again (gratuitous ARP, unsolicited NA) at its
        // next poll, so the bridge learns where the guest is now.
        if let Some(a) = app.as_mut() {
            a.reannounce_all();
            crate::println!(
                "resume: {} interface(s) reconnected, announcing their addresses",
                vifs.members().count()
            );
        }
    }
    let t2 = crate::time::now_ms();
    if how == Resume::NewDomain {
        // xenstored of the new domain has neither our control keys nor our watches, and Xen
        // forgot the domain's watchdog (after the devices: serving comes first).
        control_setup(store);
        vifs.rewatch();
        if let Some(s) = watchdog_s {
            *watchdog = match crate::watchdog::Watchdog::arm(s) {
                Ok(w) => {
                    crate::println!("resume: watchdog armed again (id {}, {s} s)", w.id());
                    Some(w)
                }
                Err(e) => {
                    log::error!("resume: SCHEDOP_watchdog({s} s) failed: {e}; running without it");
                    None
                }
            };
        }
    }
    let (h, f) = (crate::mem::heap_stats(), crate::mem::frame_stats());
    crate::println!(
        "resume ({how:?}): serving again; {} ms from the suspend call to the platform back, devices back in {} ms; {} TX frame slot(s) dropped so far; {} port(s) open; heap {} KiB in {} allocations, {} of {} frames used",
        t1.saturating_sub(t0),
        t2.saturating_sub(t1),
        vifs.members().map(|(_, n)| n.total_stats().tx_lost).sum::<u64>(),
        xen::suspend::open_ports(),
        h.allocated / 1024,
        h.allocations,
        f.used,
        f.total
    );
    how
}
