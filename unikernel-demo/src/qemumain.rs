//! The plain-QEMU main loop: virtio-net and virtio-blk (microvm's virtio-mmio) under the same
//! application as on Xen. Without device interrupts wired up, the loop polls the devices and sleeps
//! in `hlt` until the APIC timer fires, at most [`MAX_SLEEP_NS`] later.

use crate::app::App;
use crate::cmdline::Config;
use crate::disk::Disk;
use alloc::boxed::Box;

/// Longest sleep between device polls.
const MAX_SLEEP_NS: u64 = 1_000_000;

/// Runs the key-value server on the first virtio-net and virtio-blk device. Returns if there is no
/// network device.
pub fn run(cfg: &Config) {
    match crate::arch::apic::init() {
        Some(t) => crate::println!("apic: timer {} ticks/ms; PICs masked", t),
        None => crate::println!("apic: none; idling by polling"),
    }
    crate::arch::enable_interrupts();
    let mut found = crate::virtio::probe();
    if found.nets.is_empty() {
        crate::println!("virtio: no network device; nothing to serve");
        return;
    }
    let mut net = found.nets.remove(0);
    let (disk_name, disk) = if found.blks.is_empty() {
        crate::println!("kv: no disk; using a 4 MiB RAM disk (values will not persist)");
        ("ramdisk", Disk::Mem(kv_app::MemDisk::new(512, 8192)))
    } else {
        ("virtio-blk0", Disk::Virtio(Box::new(found.blks.remove(0))))
    };
    let mac = net.mac();
    let mut app = match App::new(&mut net, mac, disk, cfg) {
        Ok(a) => a,
        Err(e) => panic!("kv: cannot start: {e}"),
    };
    loop {
        let generation = crate::arch::apic::timer_irqs();
        app.stats.nets = alloc::vec![("virtio-net0".into(), net.counters)];
        app.stats.blks = alloc::vec![(disk_name.into(), app.store.device().counters)];
        app.stats.events = generation;
        let (rx0, tx0) = (net.counters.rx_packets, net.counters.tx_packets);
        let delay = app
            .poll(&mut net)
            .map_or(MAX_SLEEP_NS, |d| d.total_micros() * 1000)
            .min(MAX_SLEEP_NS);
        // Frames moved: more are likely queued (no device interrupts tell us), so poll again at once.
        if delay == 0 || net.counters.rx_packets != rx0 || net.counters.tx_packets != tx0 {
            continue;
        }
        crate::arch::apic::arm(delay);
        crate::arch::disable_interrupts();
        if crate::arch::apic::timer_irqs() == generation {
            crate::arch::enable_interrupts_and_halt();
        } else {
            crate::arch::enable_interrupts();
        }
    }
}
