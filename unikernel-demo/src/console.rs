//! Console output: port 0xE9 (QEMU's debugcon; under Xen HVM/PVH, Xen's own log) from the first
//! instruction, and the Xen PV console ring (to xenconsoled) once it is up.

use core::fmt::{self, Write};
use spin::Mutex;

/// The debug port (QEMU `-debugcon`, Xen's HVM debug port).
pub const DEBUGCON_PORT: u16 = 0xE9;

/// Something console bytes can go to besides the debug port.
pub trait Sink: Send {
    /// Writes all of `bytes` (may wait briefly for room).
    fn write(&mut self, bytes: &[u8]);
}

struct Console {
    /// Whether output also goes to port 0xE9.
    debugcon: bool,
    /// The PV console ring, when up.
    ring: Option<&'static mut dyn Sink>,
    /// At the start of a line (the next byte gets a timestamp).
    line_start: bool,
}

impl Console {
    fn write_bytes(&mut self, bytes: &[u8]) {
        // Port I/O faults in a classic PV guest: no debug port there.
        if self.debugcon && !crate::platform::is_pv() {
            for &b in bytes {
                crate::arch::outb(DEBUGCON_PORT, b);
            }
        }
        if let Some(r) = self.ring.as_mut() {
            r.write(bytes);
        }
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            if self.line_start {
                self.line_start = false;
                let ns = crate::time::now_ns();
                let mut buf = Stamp::default();
                let _ = write!(
                    buf,
                    "[{:4}.{:06}] ",
                    ns / 1_000_000_000,
                    (ns % 1_000_000_000) / 1000
                );
                self.write_bytes(&buf.bytes[..buf.len]);
            }
            let (line, tail) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.line_start = true;
                    rest.split_at(i + 1)
                }
                None => (rest, &[][..]),
            };
            self.write_bytes(line);
            rest = tail;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Stamp {
    bytes: [u8; 32],
    len: usize,
}

impl Write for Stamp {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

static CONSOLE: Mutex<Console> = Mutex::new(Console {
    debugcon: true,
    ring: None,
    line_start: true,
});

/// Prints formatted text to every console sink.
pub fn print(args: fmt::Arguments<'_>) {
    crate::arch::without_interrupts(|| {
        let _ = CONSOLE.lock().write_fmt(args);
    });
}

/// Prints from a context that may have interrupted a console user (exceptions, panics): breaks the
/// console lock first.
pub fn emergency(args: fmt::Arguments<'_>) {
    crate::arch::disable_interrupts();
    // SAFETY: single CPU with interrupts now off: the only possible holder of the lock is the code
    // we interrupted, which will not run again (the caller is on a fatal path).
    unsafe { CONSOLE.force_unlock() };
    let mut c = CONSOLE.lock();
    c.debugcon = true;
    let _ = c.write_fmt(args);
}

/// Adds the PV console ring as a sink; with `keep_debugcon == false` the debug port is then only
/// used for emergencies.
pub fn set_ring(ring: &'static mut dyn Sink, keep_debugcon: bool) {
    crate::arch::without_interrupts(|| {
        let mut c = CONSOLE.lock();
        c.ring = Some(ring);
        c.debugcon = keep_debugcon;
    });
}

/// `print!` to the kernel console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// `println!` to the kernel console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Routes the `log` crate (used by the workspace crates) to the console.
struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            print(format_args!(
                "[{} {}] {}\n",
                record.level(),
                record.target(),
                record.args()
            ));
        }
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the console as the `log` backend at `level`.
pub fn init_log(level: log::LevelFilter) {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
