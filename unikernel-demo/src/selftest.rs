//! Boot self-tests (`selftest` on the command line): each checks real behaviour and reports
//! `selftest: <name> ok` or fails the run with a message.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

type TestResult = Result<(), String>;
type Test = (&'static str, fn() -> TestResult);

fn check(cond: bool, msg: impl FnOnce() -> String) -> TestResult {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

fn heap() -> TestResult {
    let before = crate::mem::heap_stats();
    // A 1 MiB buffer (the size of the largest KV value) with a pattern.
    let mut big: Vec<u8> = Vec::new();
    big.try_reserve_exact(1 << 20)
        .map_err(|e| format!("1 MiB allocation failed: {e:?}"))?;
    big.extend((0..(1u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    for (i, &b) in big.iter().enumerate() {
        let want = ((i as u32).wrapping_mul(2_654_435_761) >> 24) as u8;
        check(b == want, || {
            format!("heap byte {i} reads {b:#x}, wrote {want:#x}")
        })?;
    }
    // Many small allocations of different sizes, all distinct and intact.
    let boxes: Vec<Box<[u64]>> = (1..200usize)
        .map(|n| alloc::vec![n as u64; n].into_boxed_slice())
        .collect();
    for (i, b) in boxes.iter().enumerate() {
        check(
            b.len() == i + 1 && b.iter().all(|&v| v == (i + 1) as u64),
            || format!("small allocation {i} corrupted"),
        )?;
    }
    let mid = crate::mem::heap_stats();
    check(mid.allocated >= before.allocated + (1 << 20), || {
        format!(
            "heap counters did not grow: {} -> {}",
            before.allocated, mid.allocated
        )
    })?;
    drop(boxes);
    drop(big);
    let after = crate::mem::heap_stats();
    check(after.allocated == before.allocated, || {
        format!(
            "heap leaked: {} bytes before, {} after",
            before.allocated, after.allocated
        )
    })?;
    // Page-aligned buffers for rings and grants.
    let p = xen_hypercall::page::PageBuf::new(4).ok_or("PageBuf::new(4) failed")?;
    check((p.as_ptr() as usize).is_multiple_of(4096), || {
        format!("PageBuf not page aligned: {:p}", p.as_ptr())
    })?;
    crate::println!(
        "selftest: heap ok (1 MiB + 199 small allocations, {} KiB claimed from frames)",
        crate::mem::heap_stats().claimed / 1024
    );
    Ok(())
}

fn frames() -> TestResult {
    let stats0 = crate::mem::frame_stats();
    let (ks, ke) = crate::mem::kernel_range();
    let mut got = [0u64; 3];
    for g in &mut got {
        *g = crate::mem::FRAMES
            .lock()
            .alloc_contiguous(1)
            .ok_or("frame allocation failed")?;
        check(g.is_multiple_of(4096), || {
            format!("frame {:#x} not page aligned", *g)
        })?;
        check(*g >= 0x10_0000 && !(ks..ke).contains(g), || {
            format!("frame {:#x} overlaps low memory or the kernel", *g)
        })?;
        // SAFETY: the frame is ours and identity mapped.
        unsafe {
            core::ptr::write_volatile(*g as *mut u64, *g ^ 0x5a5a);
            check(
                core::ptr::read_volatile(*g as *const u64) == *g ^ 0x5a5a,
                || format!("frame {:#x} not writable", *g),
            )?;
        }
    }
    check(
        got[0] != got[1] && got[1] != got[2] && got[0] != got[2],
        || format!("duplicate frames {got:x?}"),
    )?;
    check(crate::mem::frame_stats().used == stats0.used + 3, || {
        "used-frame count wrong".into()
    })?;
    // SAFETY: the frame came from the allocator and is not used any more.
    unsafe { crate::mem::FRAMES.lock().free(got[1]) };
    let again = crate::mem::FRAMES
        .lock()
        .alloc_contiguous(1)
        .ok_or("frame re-allocation failed")?;
    check(again == got[1], || {
        format!("freed frame {:#x} not reused (got {again:#x})", got[1])
    })?;
    for g in got {
        // SAFETY: as above.
        unsafe { crate::mem::FRAMES.lock().free(g) };
    }
    check(crate::mem::frame_stats().used == stats0.used, || {
        "frames leaked".into()
    })?;
    let high = high_ram()?;
    crate::println!(
        "selftest: frames ok ({} of {} frames in use){high}",
        crate::mem::frame_stats().used,
        crate::mem::frame_stats().total
    );
    Ok(())
}

/// RAM above 4 GiB, when there is some: writes and reads back the last word of the free part of
/// the highest region and one word in each GiB below it (each GiB has a page directory of its
/// own; a fault here means a missing mapping). Few words: every page touched costs the host RAM.
/// Returns what it checked.
fn high_ram() -> Result<String, String> {
    const GIB: u64 = 1 << 30;
    let Some((next, end)) = crate::mem::FRAMES.lock().highest_free_range() else {
        return Ok(String::new());
    };
    if end <= 4 * GIB {
        return Ok(String::new());
    }
    let start = next.max(4 * GIB);
    let mut a = end - 8;
    let mut n = 0u64;
    loop {
        let v = a ^ 0xa5a5_5a5a;
        // SAFETY: free RAM of the allocator that nothing uses (the self-tests run alone at boot,
        // and the bump pointer of this region has not reached it), mapped by `mem::init_high`.
        let back = unsafe {
            core::ptr::write_volatile(a as *mut u64, v);
            core::ptr::read_volatile(a as *const u64)
        };
        check(back == v, || format!("RAM at {a:#x} reads back {back:#x}"))?;
        n += 1;
        match a.checked_sub(GIB) {
            Some(b) if b >= start => a = b,
            _ => break,
        }
    }
    Ok(format!(
        "; RAM above 4 GiB: {n} words written and read back in {start:#x}-{end:#x}"
    ))
}

fn breakpoint() -> TestResult {
    let before = crate::arch::idt::breakpoints();
    // SAFETY: int3 traps to our breakpoint handler, which counts it and returns after the instruction.
    unsafe { core::arch::asm!("int3") };
    let after = crate::arch::idt::breakpoints();
    check(after == before + 1, || {
        format!("breakpoint count {before} -> {after}")
    })?;
    crate::println!(
        "selftest: idt ok (int3 handled {} and resumed)",
        if crate::platform::is_pv() {
            "through the PV trap table"
        } else {
            "on an IST stack"
        }
    );
    Ok(())
}

fn sse() -> TestResult {
    // Floating point and vector code must work in the kernel and survive an interrupt.
    let v: Vec<f64> = (1..=64).map(|i| i as f64 * 0.5).collect();
    let s: f64 = core::hint::black_box(&v).iter().sum();
    // SAFETY: see `breakpoint`.
    unsafe { core::arch::asm!("int3") };
    let s2: f64 = core::hint::black_box(&v).iter().sum();
    check(s == 1040.0 && s2 == s, || {
        format!("SSE sums {s} / {s2}, want 1040")
    })?;
    crate::println!("selftest: sse ok");
    Ok(())
}

fn time() -> TestResult {
    let t0 = crate::time::now_ns();
    let mut last = t0;
    for _ in 0..1000 {
        let t = crate::time::now_ns();
        check(t >= last, || format!("time went backwards: {last} -> {t}"))?;
        last = t;
    }
    if crate::platform::is_xen() {
        // The one-shot timer must wake a blocked vCPU.
        let fires = crate::xen::timer_fires();
        let deadline = crate::time::now_ns() + 20_000_000;
        while crate::time::now_ns() < deadline {
            let g = crate::xen::event_generation();
            crate::xen::block_until(Some(deadline), g);
        }
        let late = crate::time::now_ns() - deadline;
        check(crate::xen::timer_fires() > fires, || {
            "VIRQ_TIMER never fired".into()
        })?;
        crate::println!(
            "selftest: time ok (timer woke us {} us after the deadline)",
            late / 1000
        );
    } else {
        check(last > t0, || "time does not advance".into())?;
        crate::println!(
            "selftest: time ok (monotonic, {} ns per 1000 reads)",
            last - t0
        );
    }
    Ok(())
}

/// Runs every self-test; returns how many passed or the first failure.
pub fn run() -> Result<usize, String> {
    let tests: [Test; 5] = [
        ("heap", heap),
        ("frames", frames),
        ("idt", breakpoint),
        ("sse", sse),
        ("time", time),
    ];
    for (name, t) in tests {
        t().map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(tests.len())
}
