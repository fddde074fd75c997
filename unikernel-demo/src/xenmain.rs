//! The Xen main loop: grant table and xenstore up, every vif and vbd connected (netfront,
//! blkfront), the key-value server on the first vif and vbd, control/shutdown handled.

use crate::app::{App, NetCounters};
use crate::cmdline::Config;
use crate::disk::{Disk, XenBlk};
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
    let name = store
        .read(TxId::NONE, "name")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    let domid = store
        .read(TxId::NONE, "domid")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
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
    let mut nets: Vec<(String, XenNet)> = Vec::new();
    for id in &vifs {
        let t0 = crate::time::now_ms();
        match connect_net(grants, store, &clock, id) {
            Ok(n) => {
                let m = n.mac();
                crate::println!(
                    "netfront vif/{id}: connected in {} ms, mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, mtu {}, {} queue(s), features {:?}",
                    crate::time::now_ms() - t0,
                    m[0], m[1], m[2], m[3], m[4], m[5],
                    n.mtu(),
                    n.num_queues(),
                    n.features()
                );
                nets.push((format!("vif{id}"), n));
            }
            Err(e) => crate::println!("netfront vif/{id}: failed: {e}"),
        }
    }

    let mut disks: Vec<(String, Disk)> = Vec::new();
    let mut connected_vbds = Vec::new();
    for id in &vbds {
        let t0 = crate::time::now_ms();
        match connect_blk(grants, store, &clock, id) {
            Ok(b) => {
                connected_vbds.push(id.clone());
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
                disks.push((format!("vbd{id}"), Disk::Xen(Box::new(b))));
            }
            Err(e) => crate::println!("blkfront vbd/{id}: failed: {e}"),
        }
    }

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

    let mut app = if let Some((_, net0)) = nets.first_mut() {
        let mac = net0.mac();
        match App::new(net0, mac, disk.1, cfg) {
            Ok(a) => Some(a),
            Err(e) => {
                crate::println!("kv: cannot start: {e}");
                None
            }
        }
    } else {
        crate::println!("net: no network device; nothing to serve (waiting for control/shutdown)");
        None
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
            a.stats.nets = nets.iter().map(|(n, d)| (n.clone(), counters(d))).collect();
            a.stats.blks = alloc::vec![(vbd_set.name().into(), a.store.device().counters)];
            a.stats.events = xen::upcalls();
            a.stats.gauges = gauges(&nets, a.store.device(), grants);
            if let Some((_, net0)) = nets.first_mut() {
                deadline = a
                    .poll(net0)
                    .map(|d| crate::time::now_ns() + d.total_micros() * 1000);
            }
        }
        // Frames on the other vifs are dropped (the server listens on the first one).
        for (_, n) in nets.iter_mut().skip(1) {
            while let Ok(Some(_)) = n.receive() {}
        }
        // Watch events: shutdown requests and netfront backend state changes, each taken by its
        // token (never blocking); a blkfront's events stay queued for its own blocking calls.
        let now = xen_store::Deadline::now(&KernelClock);
        while let Ok(Some(_)) = store.wait_watch_until(SHUTDOWN_TOKEN, now) {
            match shutdown_request(store) {
                Some(ShutdownReason::Suspend) => suspend_resume(
                    store,
                    &mut app,
                    &mut nets,
                    &mut disks,
                    vbd_set.name(),
                    &mut watchdog,
                    cfg.watchdog,
                ),
                Some(reason) => shutdown(reason, &mut app, &mut nets, disks),
                None => {}
            }
        }
        for (name, n) in nets.iter_mut() {
            while let Ok(Some(_)) = store.wait_watch_until(n.watch_token(), now) {
                match n.handle_backend_change() {
                    Ok(s) => crate::println!("netfront {name}: {s:?}"),
                    Err(e) => crate::println!("netfront {name}: {e}"),
                }
            }
        }
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
    nets: &[(String, XenNet)],
    disk: &crate::app::Counted<Disk>,
    grants: &xen::Grants,
) -> Vec<crate::app::Gauges> {
    let mut out = Vec::new();
    for (name, n) in nets {
        let (tx, rx) = n.ring_in_flight();
        out.push((
            name.clone(),
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

/// Connects netfront `vif/<id>` (new + connect).
fn connect_net(
    grants: &'static xen::Grants,
    store: &'static xen::XenStore,
    clock: &xen_store::xenbus::SharedClock,
    id: &str,
) -> Result<XenNet, xen_netfront::NetError> {
    Netfront::new(grants, KernelEvents, store, clock.clone(), id, net_config()).and_then(|mut n| {
        n.connect()?;
        Ok(n)
    })
}

/// Connects blkfront `vbd/<id>`.
fn connect_blk(
    grants: &'static xen::Grants,
    store: &'static xen::XenStore,
    clock: &xen_store::xenbus::SharedClock,
    id: &str,
) -> Result<XenBlk, xen_blkfront::BlkError> {
    xen_blkfront::BlkFront::new(grants, KernelEvents, store, clock.clone(), id, blk_config())
        .and_then(|mut b| b.connect().map(|_| b))
}

/// Advertises the control/shutdown requests we handle and watches the node (at boot, and again
/// after a resume: the new domain's xenstore has neither our keys nor our watches).
fn control_setup(store: &xen::XenStore) {
    let suspend = (!crate::platform::is_pv()).then_some("control/feature-suspend");
    for k in ["control/feature-poweroff", "control/feature-reboot"]
        .into_iter()
        .chain(suspend)
    {
        if let Err(e) = store.write(TxId::NONE, k, b"1") {
            crate::println!("xen: cannot write {k}: {e}");
        }
    }
    if let Err(e) = store.watch("control/shutdown", SHUTDOWN_TOKEN) {
        crate::println!("xen: cannot watch control/shutdown: {e}; xl shutdown will not work");
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
    nets: &mut Vec<(String, XenNet)>,
    disks: Vec<(String, Disk)>,
) -> ! {
    if let Some(a) = app.as_mut() {
        match a.flush() {
            Ok(()) => crate::println!("shutdown: store flushed"),
            Err(e) => crate::println!("shutdown: flush failed: {e}"),
        }
    }
    for (name, n) in nets.iter_mut() {
        match n.disconnect() {
            Ok(()) => crate::println!("shutdown: {name} closed"),
            Err(e) => crate::println!("shutdown: {name}: {e}"),
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
}

/// Every frontend, the store's disk first (so the store is back before the network is).
fn fronts<'a>(
    app: &'a mut Option<App<Disk>>,
    nets: &'a mut [(String, XenNet)],
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
    for (name, n) in nets.iter_mut() {
        out.push((name.clone(), Front::Net(n)));
    }
    out
}

/// Handles `control/shutdown = suspend` (already acknowledged), between two polls of the main
/// loop, so no HTTP request is half done.
///
/// The store's disk is flushed first, so every acknowledged write is on the backend before the
/// memory image is taken, and every frontend is quiesced through its lifecycle (`suspend()`:
/// blkfront keeps unfinished requests, netfront stops its data path). Then
/// `SCHEDOP_shutdown(SHUTDOWN_suspend)`:
/// - cancelled (`xl save -c`): every frontend goes on with its rings (`Resume::Cancelled`);
/// - resumed in a new domain: the platform is back (see [`xen::suspend`]: shared_info, the FIFO
///   ABI, grant frames, VIRQ_TIMER, xenstore, console), the control node is set up again and the
///   watchdog re-armed; then the *same* frontend objects reconnect (`Resume::NewDomain`): they
///   forget their void ports without closing them, their old grant regions are freed without
///   touching entries (the grant table's epoch), new rings and persistent grants are granted and
///   blkfront re-issues its unfinished requests in order. smoltcp's interface and sockets (TCP
///   state) never see a new device: clients see a pause. A gratuitous ARP then tells the bridge
///   where we are. Frames still in netfront's TX ring at the suspend are lost; TCP retransmits.
fn suspend_resume(
    store: &'static xen::XenStore,
    app: &mut Option<App<Disk>>,
    nets: &mut [(String, XenNet)],
    disks: &mut [(String, Disk)],
    disk_name: &str,
    watchdog: &mut Option<crate::watchdog::Watchdog>,
    watchdog_s: Option<u32>,
) {
    let t0 = crate::time::now_ms();
    if let Some(a) = app.as_mut() {
        if let Err(e) = a.flush() {
            crate::println!("suspend: store flush failed: {e}");
        }
    }
    // Only the frontends that were quiesced are resumed (a device that was down stays with its
    // own watch-driven reconnect).
    let mut suspended = Vec::new();
    for (name, mut f) in fronts(app, nets, disks, disk_name) {
        match f.suspend() {
            Ok(()) => suspended.push(name),
            Err(e) => crate::println!("suspend: {name}: {e}; left as it is"),
        }
    }
    let (h, f) = (crate::mem::heap_stats(), crate::mem::frame_stats());
    crate::println!(
        "suspend: {} device(s) quiesced, SCHEDOP_shutdown(suspend); heap {} KiB in {} allocations, {} of {} frames used",
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
    if how == Resume::NewDomain {
        // xenstored of the new domain has neither our control keys nor our watches, and Xen
        // forgot the domain's watchdog.
        control_setup(store);
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
    let mut lost_disk = None;
    for (name, mut f) in fronts(app, nets, disks, disk_name) {
        if !suspended.contains(&name) {
            continue;
        }
        if let Err(e) = f.resume(how) {
            crate::println!("resume: {name}: {e}");
            if name == disk_name {
                lost_disk = Some(format!("disk {name} did not come back: {e}"));
            }
        }
    }
    if let (Some(p), Some(a)) = (lost_disk, app.as_mut()) {
        a.stats.problem = Some(p);
    }
    if how == Resume::NewDomain {
        if let (Some((name, n)), Some(a)) = (nets.first_mut(), app.as_ref()) {
            match a.ipv4().map(|ip| gratuitous_arp(n, ip)) {
                Some(Ok(())) => crate::println!("resume: {name} reconnected, gratuitous ARP sent"),
                Some(Err(e)) => crate::println!("resume: {name} reconnected; gratuitous ARP: {e}"),
                None => {
                    crate::println!("resume: {name} reconnected (no address to announce yet)")
                }
            }
        }
    }
    let t2 = crate::time::now_ms();
    let (h, f) = (crate::mem::heap_stats(), crate::mem::frame_stats());
    crate::println!(
        "resume ({how:?}): serving again; {} ms from the suspend call to the platform back, devices back in {} ms; {} port(s) open; heap {} KiB in {} allocations, {} of {} frames used",
        t1.saturating_sub(t0),
        t2.saturating_sub(t1),
        xen::suspend::open_ports(),
        h.allocated / 1024,
        h.allocations,
        f.used,
        f.total
    );
}

/// Sends a gratuitous ARP request (sender and target address both `ip`, broadcast) on `n`, so that
/// the bridge and the neighbours learn where our MAC is after a migration.
fn gratuitous_arp(
    n: &mut XenNet,
    ip: smoltcp::wire::Ipv4Address,
) -> Result<(), xen_netfront::NetError> {
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
        EthernetRepr,
    };
    let mac = EthernetAddress(n.mac());
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    };
    let eth = EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    // Ethernet header + ARP, padded to the 60-byte minimum frame.
    let mut buf = [0u8; 60];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    n.transmit(0, &buf, xen_netfront::TxMeta::default())
}
