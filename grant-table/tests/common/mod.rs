//! A tiny private fake Xen for the grant-table tests: one guest (domid 1) and a remote domain
//! (domid 0) with its own grant table, enough of `Hypercall` for the grant-table code paths.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use xen_grant_table::GrantRef;
use xen_hypercall::abi::grant_table::*;
use xen_hypercall::abi::memory::{XenAddToPhysmap, XENMAPSPACE_GRANT_TABLE, XENMEM_ADD_TO_PHYSMAP};
use xen_hypercall::abi::{DomId, DOMID_SELF};
use xen_hypercall::page::PageBuf;
use xen_hypercall::{op, Errno, Gfn, Hypercall, PAGE_SIZE};

/// The guest's domid.
pub const GUEST: DomId = 1;
/// The remote (backend) domain's domid.
pub const REMOTE: DomId = 0;

#[derive(Default)]
struct State {
    gfn_of: HashMap<usize, u64>,
    addr_of: HashMap<u64, usize>,
    next_gfn: u64,
    /// Guest table frames, index = frame number.
    frames: Vec<usize>,
    max_frames: u32,
    /// Frames the fake allocated for the PV path.
    pv_pages: Vec<PageBuf>,
    /// The remote domain's grant table: ref -> (flags, domid, host page address).
    remote: HashMap<GrantRef, (u16, DomId, usize)>,
    /// Active remote mappings of guest refs: ref -> count.
    maps: HashMap<GrantRef, (u32, bool)>,
    calls: Vec<(u32, u64)>,
}

/// The fake hypervisor; a cheap clone handle.
#[derive(Clone)]
pub struct FakeXen(Arc<Mutex<State>>);

impl FakeXen {
    /// A fake whose grant table may grow to `max_frames` frames and has 1 frame now.
    pub fn new(max_frames: u32) -> Self {
        FakeXen(Arc::new(Mutex::new(State {
            max_frames,
            next_gfn: 0x100,
            ..Default::default()
        })))
    }

    fn register(st: &mut State, addr: usize) -> u64 {
        if let Some(&g) = st.gfn_of.get(&addr) {
            return g;
        }
        let g = st.next_gfn;
        st.next_gfn += 1;
        st.gfn_of.insert(addr, g);
        st.addr_of.insert(g, addr);
        g
    }

    fn entry(st: &State, gref: GrantRef) -> Option<*mut GrantEntryV1> {
        let per = GRANT_ENTRIES_V1_PER_FRAME as u32;
        let frame = *st.frames.get((gref / per) as usize)?;
        Some((frame as *mut GrantEntryV1).wrapping_add((gref % per) as usize))
    }

    fn flags_of(st: &State, gref: GrantRef) -> Option<&'static AtomicU16> {
        let e = Self::entry(st, gref)?;
        // SAFETY: table frames are never freed during a test (the table leaks them).
        Some(unsafe { AtomicU16::from_ptr(std::ptr::addr_of_mut!((*e).flags)) })
    }

    /// The guest entry of `gref` (flags, domid, frame), read like Xen would.
    pub fn entry_of(&self, gref: GrantRef) -> Option<(u16, DomId, u32)> {
        let st = self.0.lock().unwrap();
        let e = Self::entry(&st, gref)?;
        // SAFETY: see flags_of.
        unsafe {
            Some((
                Self::flags_of(&st, gref)?.load(Ordering::Acquire),
                std::ptr::addr_of!((*e).domid).read_volatile(),
                std::ptr::addr_of!((*e).frame).read_volatile(),
            ))
        }
    }

    /// The remote domain maps guest grant `gref`, as Xen does: checks the entry and sets
    /// GTF_reading (and GTF_writing when writable) with a compare-and-exchange.
    pub fn map(&self, gref: GrantRef, readonly: bool) -> Result<*mut u8, i16> {
        let mut st = self.0.lock().unwrap();
        let e = Self::entry(&st, gref).ok_or(GNTST_BAD_GNTREF)?;
        let f = Self::flags_of(&st, gref).ok_or(GNTST_BAD_GNTREF)?;
        let mut cur = f.load(Ordering::Acquire);
        loop {
            if cur & GTF_TYPE_MASK != GTF_PERMIT_ACCESS {
                return Err(GNTST_BAD_GNTREF);
            }
            // SAFETY: see flags_of.
            let domid = unsafe { std::ptr::addr_of!((*e).domid).read_volatile() };
            if domid != REMOTE {
                return Err(GNTST_PERMISSION_DENIED);
            }
            if !readonly && cur & GTF_READONLY != 0 {
                return Err(GNTST_PERMISSION_DENIED);
            }
            let new = cur | GTF_READING | if readonly { 0 } else { GTF_WRITING };
            match f.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        // SAFETY: see flags_of.
        let frame = unsafe { std::ptr::addr_of!((*e).frame).read_volatile() } as u64;
        let addr = *st.addr_of.get(&frame).ok_or(GNTST_BAD_PAGE)?;
        let m = st.maps.entry(gref).or_insert((0, false));
        m.0 += 1;
        m.1 |= !readonly;
        Ok(addr as *mut u8)
    }

    /// The remote domain unmaps one mapping of `gref`; the last unmap clears the flags.
    pub fn unmap(&self, gref: GrantRef) {
        let mut st = self.0.lock().unwrap();
        let Some(m) = st.maps.get_mut(&gref) else {
            return;
        };
        m.0 -= 1;
        if m.0 == 0 {
            st.maps.remove(&gref);
            if let Some(f) = Self::flags_of(&st, gref) {
                f.fetch_and(!(GTF_READING | GTF_WRITING), Ordering::AcqRel);
            }
        }
    }

    /// Overwrites the flags of guest entry `gref` (stale state, e.g. left from before a kexec).
    pub fn poke_flags(&self, gref: GrantRef, flags: u16) {
        let st = self.0.lock().unwrap();
        Self::flags_of(&st, gref)
            .unwrap()
            .store(flags, Ordering::SeqCst);
    }

    /// The remote domain grants `page` to the guest as `gref` in its own table.
    pub fn remote_grant(&self, gref: GrantRef, page: *mut u8, readonly: bool) {
        let mut st = self.0.lock().unwrap();
        let flags = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        st.remote.insert(gref, (flags, GUEST, page as usize));
    }

    /// Hypercalls made so far: (op, first argument).
    pub fn calls(&self) -> Vec<(u32, u64)> {
        self.0.lock().unwrap().calls.clone()
    }

    /// Number of guest table frames Xen knows about.
    pub fn nr_frames(&self) -> usize {
        self.0.lock().unwrap().frames.len()
    }

    fn copy_one(st: &State, c: &mut GnttabCopy) -> i16 {
        let resolve = |p: &GnttabCopyPtr, is_gref: bool, write: bool| -> Result<usize, i16> {
            if is_gref {
                if p.domid != REMOTE {
                    return Err(GNTST_BAD_DOMAIN);
                }
                let &(flags, domid, addr) = st.remote.get(&p.as_gref()).ok_or(GNTST_BAD_GNTREF)?;
                if domid != GUEST || flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS {
                    return Err(GNTST_BAD_GNTREF);
                }
                if write && flags & GTF_READONLY != 0 {
                    return Err(GNTST_PERMISSION_DENIED);
                }
                Ok(addr)
            } else {
                if p.domid != DOMID_SELF && p.domid != GUEST {
                    return Err(GNTST_PERMISSION_DENIED);
                }
                st.addr_of.get(&p.as_gmfn()).copied().ok_or(GNTST_BAD_PAGE)
            }
        };
        let len = c.len as usize;
        if c.source.offset as usize + len > PAGE_SIZE || c.dest.offset as usize + len > PAGE_SIZE {
            return GNTST_BAD_COPY_ARG;
        }
        let src = match resolve(&c.source, c.flags & GNTCOPY_SOURCE_GREF != 0, false) {
            Ok(a) => a + c.source.offset as usize,
            Err(s) => return s,
        };
        let dst = match resolve(&c.dest, c.flags & GNTCOPY_DEST_GREF != 0, true) {
            Ok(a) => a + c.dest.offset as usize,
            Err(s) => return s,
        };
        // SAFETY: both ends are live test pages; ranges stay inside one page (checked above).
        unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, len) };
        GNTST_OKAY
    }
}

impl Hypercall for FakeXen {
    unsafe fn hypercall(&self, opn: u32, args: [u64; 5]) -> i64 {
        let mut st = self.0.lock().unwrap();
        st.calls.push((opn, args[0]));
        let neg = |e: Errno| -(e.to_raw() as i64);
        match (opn, args[0] as u32) {
            (op::GRANT_TABLE_OP, GNTTABOP_QUERY_SIZE) => {
                // SAFETY: the caller passes a valid gnttab_query_size.
                let q = unsafe { &mut *(args[1] as *mut GnttabQuerySize) };
                if q.dom != DOMID_SELF {
                    q.status = GNTST_BAD_DOMAIN;
                    return 0;
                }
                q.nr_frames = st.frames.len().max(1) as u32;
                q.max_nr_frames = st.max_frames;
                q.status = GNTST_OKAY;
                0
            }
            (op::GRANT_TABLE_OP, GNTTABOP_SETUP_TABLE) => {
                // SAFETY: the caller passes a valid gnttab_setup_table.
                let s = unsafe { &mut *(args[1] as *mut GnttabSetupTable) };
                if s.nr_frames > st.max_frames {
                    s.status = GNTST_GENERAL_ERROR;
                    return 0;
                }
                while st.frames.len() < s.nr_frames as usize {
                    let p = PageBuf::new(1).unwrap();
                    let addr = p.as_ptr() as usize;
                    Self::register(&mut st, addr);
                    st.frames.push(addr);
                    st.pv_pages.push(p);
                }
                for i in 0..s.nr_frames as usize {
                    let g = st.gfn_of[&st.frames[i]];
                    // SAFETY: frame_list points to nr_frames u64 values.
                    unsafe { (s.frame_list as *mut u64).add(i).write(g) };
                }
                s.status = GNTST_OKAY;
                0
            }
            (op::GRANT_TABLE_OP, GNTTABOP_COPY) => {
                // SAFETY: the caller passes `count` gnttab_copy structs.
                let ops = unsafe {
                    std::slice::from_raw_parts_mut(args[1] as *mut GnttabCopy, args[2] as usize)
                };
                for c in ops {
                    c.status = Self::copy_one(&st, c);
                }
                0
            }
            (op::MEMORY_OP, XENMEM_ADD_TO_PHYSMAP) => {
                // SAFETY: the caller passes a valid xen_add_to_physmap.
                let x = unsafe { &*(args[1] as *const XenAddToPhysmap) };
                if x.space != XENMAPSPACE_GRANT_TABLE || x.domid != DOMID_SELF {
                    return neg(Errno::EINVAL);
                }
                if x.idx >= st.max_frames as u64 || x.idx > st.frames.len() as u64 {
                    return neg(Errno::EINVAL);
                }
                let Some(&addr) = st.addr_of.get(&x.gpfn) else {
                    return neg(Errno::EFAULT);
                };
                if (x.idx as usize) < st.frames.len() {
                    st.frames[x.idx as usize] = addr;
                } else {
                    st.frames.push(addr);
                }
                0
            }
            _ => neg(Errno::ENOSYS),
        }
    }

    fn virt_to_gfn(&self, addr: *const u8) -> Gfn {
        let mut st = self.0.lock().unwrap();
        Gfn(Self::register(&mut st, addr as usize))
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<*mut u8> {
        self.0
            .lock()
            .unwrap()
            .addr_of
            .get(&gfn.0)
            .map(|&a| a as *mut u8)
    }
}

/// A global allocator that remembers which page-aligned allocations are live, so tests can check
/// that a page still mapped by the remote side was not freed.
pub mod tracking {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    const SLOTS: usize = 1 << 14;
    static LIVE: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static LOCK: AtomicBool = AtomicBool::new(false);

    fn with_lock<R>(f: impl FnOnce() -> R) -> R {
        while LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        let r = f();
        LOCK.store(false, Ordering::Release);
        r
    }

    fn slot(p: usize) -> usize {
        (p >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) % SLOTS
    }

    /// The tracking allocator.
    pub struct Tracking;

    // SAFETY: forwards to System; the bookkeeping never allocates.
    unsafe impl GlobalAlloc for Tracking {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            // SAFETY: forwarded.
            let p = unsafe { System.alloc(l) };
            if !p.is_null() && l.align() >= 4096 {
                with_lock(|| {
                    let mut i = slot(p as usize);
                    while LIVE[i].load(Ordering::Relaxed) != 0 {
                        i = (i + 1) % SLOTS;
                    }
                    LIVE[i].store(p as usize, Ordering::Relaxed);
                });
            }
            p
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            // SAFETY: forwarded; alloc zeroes nothing, so zero here.
            let p = unsafe { self.alloc(l) };
            if !p.is_null() {
                // SAFETY: p is valid for l.size() bytes.
                unsafe { p.write_bytes(0, l.size()) };
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            if l.align() >= 4096 {
                with_lock(|| {
                    let mut i = slot(p as usize);
                    for _ in 0..SLOTS {
                        if LIVE[i].load(Ordering::Relaxed) == p as usize {
                            LIVE[i].store(0, Ordering::Relaxed);
                            // Re-insert the rest of the probe run so lookups keep working.
                            let mut j = (i + 1) % SLOTS;
                            while LIVE[j].load(Ordering::Relaxed) != 0 {
                                let v = LIVE[j].swap(0, Ordering::Relaxed);
                                let mut k = slot(v);
                                while LIVE[k].load(Ordering::Relaxed) != 0 {
                                    k = (k + 1) % SLOTS;
                                }
                                LIVE[k].store(v, Ordering::Relaxed);
                                j = (j + 1) % SLOTS;
                            }
                            break;
                        }
                        i = (i + 1) % SLOTS;
                    }
                });
            }
            // SAFETY: forwarded.
            unsafe { System.dealloc(p, l) }
        }
    }

    /// Page-aligned allocations live now (count them from a test binary with one test, or the
    /// other tests' allocations race with it).
    pub fn live_page_allocations() -> usize {
        with_lock(|| {
            LIVE.iter()
                .filter(|a| a.load(Ordering::Relaxed) != 0)
                .count()
        })
    }

    /// True when the page-aligned allocation starting at `p` is live.
    pub fn is_live(p: *const u8) -> bool {
        with_lock(|| {
            let mut i = slot(p as usize);
            while LIVE[i].load(Ordering::Relaxed) != 0 {
                if LIVE[i].load(Ordering::Relaxed) == p as usize {
                    return true;
                }
                i = (i + 1) % SLOTS;
            }
            false
        })
    }
}

#[global_allocator]
static GLOBAL: tracking::Tracking = tracking::Tracking;
