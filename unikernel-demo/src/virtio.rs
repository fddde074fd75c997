//! The plain-QEMU device path: virtio-net and virtio-blk over virtio-mmio (`-machine microvm`), through
//! the `virtio-drivers` crate, behind the same traits as the Xen frontends (smoltcp's
//! [`Device`](smoltcp::phy::Device) and [`BlockDevice`]).

use alloc::vec::Vec;
use core::ptr::NonNull;
use kv_app::BlockDevice;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::device::net::VirtIONet;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// Where QEMU's microvm machine puts its virtio-mmio transports, and how many there are.
const MICROVM_MMIO_BASE: u64 = 0xFEB0_0000;
const MICROVM_MMIO_SIZE: usize = 0x200;
const MICROVM_MMIO_SLOTS: u64 = 24;

/// DMA for virtio-drivers: frames from the frame allocator, identity mapped (guest physical ==
/// virtual), so sharing a buffer is just using its address.
pub struct KernelHal;

// SAFETY: dma_alloc returns zeroed, page-aligned, physically contiguous, identity-mapped frames that
// nothing else uses until dma_dealloc; share returns the physical address of memory that stays
// valid while the device uses it (the caller's contract).
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let pa = crate::mem::FRAMES
            .lock()
            .alloc_contiguous(pages as u64)
            .unwrap_or(0);
        if pa == 0 {
            return (0, NonNull::dangling());
        }
        // SAFETY: fresh frames we own, identity mapped.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, pages * 4096) };
        (
            pa as PhysAddr,
            NonNull::new(pa as *mut u8).unwrap_or(NonNull::dangling()),
        )
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        let mut f = crate::mem::FRAMES.lock();
        for i in 0..pages as u64 {
            // SAFETY: the frames came from dma_alloc and the device no longer uses them.
            unsafe { f.free(paddr + i * 4096) };
        }
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // Identity mapping: the heap is physically contiguous.
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// virtio-net with 16-entry queues.
pub type Net = VirtIONet<KernelHal, MmioTransport<'static>, 16>;
/// virtio-blk.
pub type Blk = VirtIOBlk<KernelHal, MmioTransport<'static>>;

/// The devices found.
#[derive(Default)]
pub struct Found {
    /// Network devices.
    pub nets: Vec<VirtioNet>,
    /// Block devices.
    pub blks: Vec<VirtioBlk>,
}

/// Probes the microvm virtio-mmio slots and initialises every net and block device.
pub fn probe() -> Found {
    let mut found = Found::default();
    for i in 0..MICROVM_MMIO_SLOTS {
        let base = MICROVM_MMIO_BASE + i * MICROVM_MMIO_SIZE as u64;
        // SAFETY: reading the magic word of a microvm virtio-mmio slot (identity mapped MMIO).
        let magic = unsafe { core::ptr::read_volatile(base as *const u32) };
        if magic != 0x7472_6976 {
            continue;
        }
        // SAFETY: device id register of the same slot.
        let id = unsafe { core::ptr::read_volatile((base + 8) as *const u32) };
        if id == 0 {
            continue;
        }
        let Some(header) = NonNull::new(base as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: a virtio-mmio slot of QEMU's microvm, identity mapped, owned by this transport only.
        let transport = match unsafe { MmioTransport::new(header, MICROVM_MMIO_SIZE) } {
            Ok(t) => t,
            Err(e) => {
                crate::println!("virtio-mmio@{base:#x}: {e}");
                continue;
            }
        };
        match transport.device_type() {
            DeviceType::Network => match Net::new(transport, 2048) {
                Ok(n) => {
                    let mac = n.mac_address();
                    crate::println!("virtio-net@{base:#x}: mac {mac:02x?}");
                    found.nets.push(VirtioNet {
                        dev: n,
                        counters: Default::default(),
                    });
                }
                Err(e) => crate::println!("virtio-net@{base:#x}: {e}"),
            },
            DeviceType::Block => match Blk::new(transport) {
                Ok(b) => {
                    crate::println!(
                        "virtio-blk@{base:#x}: {} sectors ({} MiB){}",
                        b.capacity(),
                        b.capacity() / 2048,
                        if b.readonly() { ", read-only" } else { "" }
                    );
                    found.blks.push(VirtioBlk { dev: b });
                }
                Err(e) => crate::println!("virtio-blk@{base:#x}: {e}"),
            },
            other => crate::println!("virtio-mmio@{base:#x}: {other:?} device ignored"),
        }
    }
    found
}

/// A virtio-net device as a smoltcp [`phy::Device`].
pub struct VirtioNet {
    dev: Net,
    /// Counters for `/stats`.
    pub counters: crate::app::NetCounters,
}

impl VirtioNet {
    /// The MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.dev.mac_address()
    }
}

/// A received frame (copied out; the device buffer is recycled at once).
pub struct RxToken(Vec<u8>);
/// Transmit access to the device.
pub struct TxToken<'a>(&'a mut VirtioNet);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.0.dev.new_tx_buffer(len);
        let r = f(buf.packet_mut());
        match self.0.dev.send(buf) {
            Ok(()) => {
                self.0.counters.tx_packets += 1;
                self.0.counters.tx_bytes += len as u64;
            }
            Err(_) => self.0.counters.errors += 1,
        }
        r
    }
}

impl phy::Device for VirtioNet {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(RxToken, TxToken<'_>)> {
        if !self.dev.can_recv() {
            return None;
        }
        let rx = self.dev.receive().ok()?;
        let frame = rx.packet().to_vec();
        if self.dev.recycle_rx_buffer(rx).is_err() {
            self.counters.errors += 1;
        }
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += frame.len() as u64;
        Some((RxToken(frame), TxToken(self)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<TxToken<'_>> {
        self.dev.can_send().then_some(TxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c.max_burst_size = Some(1);
        c
    }
}

/// A virtio-blk device as a [`BlockDevice`] (512-byte blocks).
pub struct VirtioBlk {
    dev: Blk,
}

/// virtio-blk errors.
pub type VirtioBlkError = virtio_drivers::Error;

impl BlockDevice for VirtioBlk {
    type Error = VirtioBlkError;
    fn block_size(&self) -> usize {
        512
    }
    fn num_blocks(&self) -> u64 {
        self.dev.capacity()
    }
    fn read_only(&self) -> bool {
        self.dev.readonly()
    }
    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), VirtioBlkError> {
        let lba = usize::try_from(lba).map_err(|_| VirtioBlkError::InvalidParam)?;
        self.dev.read_blocks(lba, buf)
    }
    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), VirtioBlkError> {
        let lba = usize::try_from(lba).map_err(|_| VirtioBlkError::InvalidParam)?;
        self.dev.write_blocks(lba, buf)
    }
    fn flush(&mut self) -> Result<(), VirtioBlkError> {
        self.dev.flush()
    }
    fn discard(&mut self, _lba: u64, _blocks: u64) -> Result<(), VirtioBlkError> {
        Ok(())
    }
}
