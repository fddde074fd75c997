//! Per-domain guest-frame registry: guest frame numbers <-> host page addresses.
//!
//! Guest memory is host memory. A domain's page is identified by its host address; the registry
//! hands out a gfn the first time a page is translated, and remembers pages the simulator allocated
//! itself (store/console rings, grant frames from `GNTTABOP_setup_table`, populated frames).

use std::collections::{BTreeMap, HashMap};
use xen_hypercall::page::PageBuf;
use xen_hypercall::PAGE_SIZE;

/// First gfn handed out for pages translated with `virt_to_gfn` (1 MiB, above the legacy hole).
const FIRST_GFN: u64 = 0x100;
/// Pages of "RAM" the memory map reports (1 GiB); gfns the registry hands out stay below it.
pub const RAM_PAGES: u64 = 0x4_0000;

/// The frame registry of one domain.
#[derive(Default)]
pub struct Memory {
    by_gfn: BTreeMap<u64, usize>,
    by_addr: HashMap<usize, u64>,
    owned: BTreeMap<u64, PageBuf>,
    next_gfn: u64,
}

impl Memory {
    /// The gfn of the page containing `addr`, allocating one on first use.
    pub fn virt_to_gfn(&mut self, addr: usize) -> u64 {
        let page = addr & !(PAGE_SIZE - 1);
        if let Some(&g) = self.by_addr.get(&page) {
            return g;
        }
        let g = self.free_gfn();
        self.insert(g, page);
        g
    }

    /// The host page registered at `gfn`.
    pub fn gfn_to_virt(&self, gfn: u64) -> Option<usize> {
        self.by_gfn.get(&gfn).copied()
    }

    fn free_gfn(&mut self) -> u64 {
        if self.next_gfn < FIRST_GFN {
            self.next_gfn = FIRST_GFN;
        }
        while self.by_gfn.contains_key(&self.next_gfn) {
            self.next_gfn += 1;
        }
        let g = self.next_gfn;
        self.next_gfn += 1;
        g
    }

    fn insert(&mut self, gfn: u64, page: usize) {
        if self.by_gfn.get(&gfn) == Some(&page) {
            return;
        }
        self.remove(gfn);
        if let Some(old) = self.by_addr.insert(page, gfn) {
            // The page moves from `old` to `gfn`; keep ownership with it.
            self.by_gfn.remove(&old);
            if let Some(buf) = self.owned.remove(&old) {
                self.owned.insert(gfn, buf);
            }
        }
        self.by_gfn.insert(gfn, page);
    }

    /// Unregisters `gfn`, freeing the page if the simulator owns it. Returns whether it was mapped.
    pub fn remove(&mut self, gfn: u64) -> bool {
        match self.by_gfn.remove(&gfn) {
            Some(page) => {
                self.by_addr.remove(&page);
                self.owned.remove(&gfn);
                true
            }
            None => false,
        }
    }

    /// Allocates a zeroed simulator-owned page at `gfn` (or at a fresh gfn when `None`), replacing
    /// whatever was there. Returns the gfn and the page address.
    pub fn alloc_page(&mut self, gfn: Option<u64>) -> (u64, usize) {
        let gfn = match gfn {
            Some(g) => g,
            None => self.free_gfn(),
        };
        let page = PageBuf::new(1).unwrap_or_else(|| panic!("xen-sim: host out of memory"));
        let addr = page.as_ptr() as usize;
        self.insert(gfn, addr);
        self.owned.insert(gfn, page);
        (gfn, addr)
    }

    /// The page at `gfn`, allocating a simulator-owned one when the gfn is unpopulated.
    pub fn page_at(&mut self, gfn: u64) -> usize {
        match self.gfn_to_virt(gfn) {
            Some(a) => a,
            None => self.alloc_page(Some(gfn)).1,
        }
    }

    /// Number of registered frames.
    #[allow(dead_code)]
    pub fn frames(&self) -> usize {
        self.by_gfn.len()
    }
}
