//! unikernel-demo: a minimal Rust guest kernel.
//!
//! Boots as a Xen PVH guest (ELF note `XEN_ELFNOTE_PHYS32_ENTRY`), as a classic Xen PV guest (the
//! PV notes, entry in `pv/`) and under plain QEMU (`-kernel`, which loads PVH ELFs the same way).
//! See `boot.rs` for the entries, `mem.rs` for memory, `xen/` for the Xen platform and
//! `selftest.rs` for the boot self-tests the plain-QEMU tests run.
#![no_std]
#![no_main]

extern crate alloc;

mod announce;
mod app;
mod arch;
mod benchmode;
mod boot;
mod cmdline;
mod console;
mod disk;
mod mem;
mod platform;
mod pv;
mod qemumain;
mod rt;
mod selftest;
mod start_info;
mod time;
mod vifs;
mod virtio;
mod watchdog;
mod xen;
mod xenmain;

use start_info::BootInfo;

/// Kernel version string printed at boot.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Rust entry point, called by the boot code in long mode with the physical address of
/// `struct hvm_start_info`.
#[no_mangle]
pub extern "C" fn kmain(start_info_pa: u32) -> ! {
    arch::gdt::init();
    arch::idt::init();
    console::init_log(log::LevelFilter::Info);
    println!("unikernel-demo {VERSION}: booting (PVH entry, start_info at {start_info_pa:#x})");

    // SAFETY: the boot code passes %ebx unchanged, and nothing has reused the loader's memory yet.
    let mut info = match unsafe { BootInfo::from_phys(start_info_pa as u64) } {
        Ok(i) => i,
        Err(e) => panic!("no valid hvm_start_info from the loader: {e}"),
    };

    let xen = xen::detect();
    match xen {
        Some(x) => {
            let (major, minor) = (x.version.major, x.version.minor);
            if let Err(e) = xen::install_hypercall_page(&x) {
                panic!("Xen {major}.{minor} detected but the hypercall page failed: {e}");
            }
            platform::set_xen();
            println!(
                "platform: Xen {major}.{minor} (CPUID base {:#x}), hypercall page installed",
                x.base
            );
        }
        None => println!("platform: no Xen signature in CPUID; plain QEMU/KVM assumed"),
    }

    if info.memmap_len == 0 {
        if platform::is_xen() {
            println!("memory: start_info has no memory map, asking Xen (XENMEM_memory_map)");
            let mut tmp = [start_info::MemEntry::default(); start_info::MAX_MEMMAP];
            match xen::memory_map(&mut tmp) {
                Ok(n) => {
                    for e in &tmp[..n] {
                        info.push_mem(*e);
                    }
                }
                Err(e) => panic!("no memory map: XENMEM_memory_map failed: {e:?}"),
            }
        } else {
            panic!("no memory map in hvm_start_info (version {})", info.version);
        }
    }
    for e in info.memmap() {
        println!(
            "memory: {:#014x}-{:#014x} {}",
            e.addr,
            e.addr + e.size,
            if e.kind == start_info::MEMMAP_TYPE_RAM {
                "RAM"
            } else {
                "reserved"
            }
        );
    }
    let mut m = mem::init(info.memmap(), &[], boot::IDENTITY_MAPPED);
    mem::init_high(
        &mut m,
        info.memmap(),
        boot::IDENTITY_MAPPED,
        arch::paging::LARGE_PAGE,
        arch::paging::map_large,
    );
    boot_common(info, m)
}

/// The boot after the entry-specific part (PVH/QEMU: [`kmain`]; classic PV: `pv::pv_kmain`):
/// memory is set up and the hypercall page (if any) installed.
pub(crate) fn boot_common(info: BootInfo, m: mem::MemInit) -> ! {
    println!("boot: {}", platform::boot_mode());
    arch::paging::paint_boot_stack();
    let guards = arch::paging::install_guards();
    let (ks, ke) = mem::kernel_range();
    println!(
        "memory: {} KiB RAM, {} KiB for frames and heap ({} KiB of it above 4 GiB); kernel image {:#x}-{:#x} ({} KiB incl. bss)",
        m.ram / 1024,
        m.usable / 1024,
        m.high / 1024,
        ks,
        ke,
        (ke - ks) / 1024
    );
    println!(
        "memory: {guards} stack guard pages unmapped; boot stack {} KiB",
        boot::BOOT_STACK_SIZE / 1024
    );
    if m.ignored_high > 0 {
        println!(
            "memory: {} KiB of RAM not mapped, unused (above {} GiB, or high pieces smaller than a large page)",
            m.ignored_high / 1024,
            mem::MAX_MAPPED >> 30
        );
    }

    let (cfg, cmdline_warnings) = cmdline::parse(info.cmdline());
    if platform::is_xen() {
        xen_init(cfg.debugcon, cfg.evtchn);
    } else {
        match time::calibrate_tsc_with_pit() {
            Some(khz) => println!("time: TSC {} MHz (calibrated against the PIT)", khz / 1000),
            None => println!("time: no PIT answered; assuming a 1 GHz TSC"),
        }
    }

    println!("cmdline: \"{}\"", info.cmdline());
    for w in &cmdline_warnings {
        println!("cmdline: {w}");
    }
    log::set_max_level(cmdline::log_filter(cfg.loglevel));
    match cfg.ip {
        Some(ip) => println!(
            "net config: static {ip}, gateway {}",
            cfg.gw
                .map_or(alloc::string::String::from("none"), |g| alloc::format!(
                    "{g}"
                ))
        ),
        None => println!("net config: DHCP"),
    }
    let scfg = app::server_config(&cfg);
    if let Some(v) = cfg.max_value.filter(|&v| v > scfg.max_body_bytes) {
        println!(
            "cmdline: max_value={v} exceeds the memory budget ({} bytes); using that",
            scfg.max_body_bytes
        );
    }
    for line in cfg.effective(scfg.max_body_bytes) {
        println!("config: {line}");
    }
    if !platform::is_xen() && (cfg.watchdog.is_some() || cfg.debug_hang_after.is_some()) {
        println!("config: watchdog= and debug_hang_after= work on Xen only; ignored here");
    }
    if cfg.debugcon {
        println!("console: keeping port 0xE9 output (debugcon)");
    }

    if cfg.panic {
        panic!("panic requested on the kernel command line");
    }
    if cfg.fault {
        println!("fault requested on the kernel command line: reading an unmapped address");
        // SAFETY: deliberately faults: no mapping covers the address, so the read raises a page
        // fault whose handler reports it and ends the kernel; it never returns.
        let v = unsafe { core::ptr::read_volatile(mem::unmapped_probe_address() as *const u64) };
        panic!("read of an unmapped address returned {v:#x}");
    }
    if cfg.overflow {
        println!(
            "overflow requested on the kernel command line: recursing until the stack runs out"
        );
        let depth = recurse(core::hint::black_box(0));
        panic!("recursion returned at depth {depth}");
    }
    if cfg.selftest {
        match selftest::run() {
            Ok(n) => {
                println!(
                    "SELFTEST PASS: {n} tests (deepest boot-stack use {} KiB)",
                    arch::paging::boot_stack_high_water() / 1024
                );
                platform::success_exit();
            }
            Err(e) => panic!("SELFTEST FAIL: {e}"),
        }
    }

    if platform::is_xen() {
        xenmain::run(&cfg);
    }
    qemumain::run(&cfg);
    println!("nothing to run; powering off");
    platform::success_exit();
}

/// Recurses without end (each frame keeps 1 KiB live), for the `overflow` test.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let mut buf = [0u8; 1024];
    buf[depth as usize % 1024] = depth as u8;
    let r = recurse(core::hint::black_box(depth + 1));
    core::hint::black_box(&buf);
    r + buf[0] as u64
}

/// Brings up the Xen platform pieces: shared_info and pvclock, the callback vector, the timer and the
/// PV console.
fn xen_init(keep_debugcon: bool, evtchn: cmdline::EvtchnAbi) {
    let evtchn = match evtchn {
        cmdline::EvtchnAbi::Auto => xen_event_channel::AbiChoice::Auto,
        cmdline::EvtchnAbi::TwoLevel => xen_event_channel::AbiChoice::TwoLevel,
        cmdline::EvtchnAbi::Fifo => xen_event_channel::AbiChoice::Fifo,
    };
    let si = match xen::init_events(evtchn) {
        Ok(p) => p,
        Err(e) => panic!("event channels (shared_info, HVM_PARAM_CALLBACK_IRQ) failed: {e}"),
    };
    // SAFETY: shared_info stays mapped for the kernel's life; vcpu_info[0].time is its pvclock record.
    unsafe { time::use_pvclock(&raw mut (*si).vcpu_info[0].time) };
    println!(
        "xen: shared_info mapped at {:#x}; pvclock is the time source",
        si as u64
    );
    arch::enable_interrupts();
    match xen::init_timer() {
        Ok(p) if platform::is_pv() => println!(
            "xen: PV event callback (set_callbacks), idle in SCHEDOP_block, VIRQ_TIMER on port {p}"
        ),
        Ok(p) => println!(
            "xen: event callback on vector {}, VIRQ_TIMER on port {p}",
            arch::idt::XEN_CALLBACK_VECTOR
        ),
        Err(e) => panic!("binding VIRQ_TIMER failed: {e}"),
    }
    if platform::is_pv() {
        // The PV console ring was connected from start_info at the very start.
        return;
    }
    match xen::console::PvConsole::connect() {
        Ok(c) => {
            let port = c.port();
            let ring: &'static mut xen::console::PvConsole =
                alloc::boxed::Box::leak(alloc::boxed::Box::new(c));
            console::set_ring(ring, keep_debugcon);
            println!("xen: PV console ring connected (event channel {port})");
        }
        Err(e) => println!("xen: no PV console ({e}); output stays on port 0xE9"),
    }
}
