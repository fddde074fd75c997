//! Xen error numbers (xen/errno.h) as a typed enum.
//!
//! Hypercalls return a negative errno on failure; [`Errno::check`] turns such a return value into a
//! `Result`.

macro_rules! errnos {
    ($($name:ident = $val:literal, $doc:literal;)*) => {
        /// A Xen error number, as returned (negated) by a failing hypercall.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Errno {
            $(#[doc = $doc] $name,)*
            /// Any value this enum does not name.
            Other(i32),
        }

        impl Errno {
            /// The error for a positive errno value.
            pub const fn from_raw(v: i32) -> Errno {
                match v {
                    $($val => Errno::$name,)*
                    other => Errno::Other(other),
                }
            }

            /// The positive errno value.
            pub const fn to_raw(self) -> i32 {
                match self {
                    $(Errno::$name => $val,)*
                    Errno::Other(v) => v,
                }
            }

            /// The C name of the error (`"ENOENT"`), or `"E?"` for unnamed values.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Errno::$name => stringify!($name),)*
                    Errno::Other(_) => "E?",
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted.";
    ENOENT = 2, "No such file or directory.";
    ESRCH = 3, "No such process.";
    EINTR = 4, "Interrupted system call.";
    EIO = 5, "I/O error.";
    ENXIO = 6, "No such device or address.";
    E2BIG = 7, "Argument list too long.";
    ENOEXEC = 8, "Exec format error.";
    EBADF = 9, "Bad file number.";
    ECHILD = 10, "No child processes.";
    EAGAIN = 11, "Try again.";
    ENOMEM = 12, "Out of memory.";
    EACCES = 13, "Permission denied.";
    EFAULT = 14, "Bad address.";
    EBUSY = 16, "Device or resource busy.";
    EEXIST = 17, "File exists.";
    EXDEV = 18, "Cross-device link.";
    ENODEV = 19, "No such device.";
    EISDIR = 21, "Is a directory.";
    EINVAL = 22, "Invalid argument.";
    ENFILE = 23, "File table overflow.";
    EMFILE = 24, "Too many open files.";
    ENOSPC = 28, "No space left on device.";
    EROFS = 30, "Read-only file system.";
    EMLINK = 31, "Too many links.";
    EDOM = 33, "Math argument out of domain of func.";
    ERANGE = 34, "Math result not representable.";
    EDEADLK = 35, "Resource deadlock would occur.";
    ENAMETOOLONG = 36, "File name too long.";
    ENOLCK = 37, "No record locks available.";
    ENOSYS = 38, "Function not implemented.";
    ENOTEMPTY = 39, "Directory not empty.";
    ENODATA = 61, "No data available.";
    ETIME = 62, "Timer expired.";
    EBADMSG = 74, "Not a data message.";
    EOVERFLOW = 75, "Value too large for defined data type.";
    EILSEQ = 84, "Illegal byte sequence.";
    ENOTSOCK = 88, "Socket operation on non-socket.";
    EOPNOTSUPP = 95, "Operation not supported on transport endpoint.";
    EADDRINUSE = 98, "Address already in use.";
    EADDRNOTAVAIL = 99, "Cannot assign requested address.";
    ENOBUFS = 105, "No buffer space available.";
    EISCONN = 106, "Transport endpoint is already connected.";
    ENOTCONN = 107, "Transport endpoint is not connected.";
    ETIMEDOUT = 110, "Connection timed out.";
    ECONNREFUSED = 111, "Connection refused.";
}

impl Errno {
    /// Interprets a raw hypercall return value: negative values are errors, others are returned.
    pub const fn check(ret: i64) -> Result<u64, Errno> {
        if ret < 0 {
            // Errno values are small; anything that does not fit an i32 (including i64::MIN, whose
            // negation overflows) is kept as `Other(i32::MAX)`.
            if ret < -(i32::MAX as i64) {
                Err(Errno::Other(i32::MAX))
            } else {
                Err(Errno::from_raw(-ret as i32))
            }
        } else {
            Ok(ret as u64)
        }
    }
}

impl core::fmt::Display for Errno {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Errno::Other(v) => write!(f, "Xen error {v}"),
            e => write!(f, "{} ({})", e.name(), e.to_raw()),
        }
    }
}

impl core::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for v in 0..200 {
            assert_eq!(Errno::from_raw(v).to_raw(), v);
        }
        assert_eq!(Errno::from_raw(2), Errno::ENOENT);
        assert_eq!(Errno::check(-11), Err(Errno::EAGAIN));
        assert_eq!(Errno::check(5), Ok(5));
        assert_eq!(Errno::check(i64::MIN + 1), Err(Errno::Other(i32::MAX)));
        assert_eq!(Errno::check(i64::MIN), Err(Errno::Other(i32::MAX)));
        assert_eq!(
            Errno::check(-(i32::MAX as i64)),
            Err(Errno::Other(i32::MAX))
        );
        assert_eq!(Errno::check(0), Ok(0));
        assert_eq!(Errno::check(i64::MAX), Ok(i64::MAX as u64));
        assert_eq!(Errno::check(-1), Err(Errno::EPERM));
        assert_eq!(Errno::check(-38), Err(Errno::ENOSYS));
        assert_eq!(Errno::check(-62), Err(Errno::ETIME));
        assert_eq!(Errno::check(-1000), Err(Errno::Other(1000)));
        assert_eq!(Errno::ENOENT.name(), "ENOENT");
        assert_eq!(Errno::Other(1000).name(), "E?");
        assert_eq!(alloc::format!("{}", Errno::Other(1000)), "Xen error 1000");
        assert_eq!(alloc::format!("{}", Errno::EINVAL), "EINVAL (22)");
    }
}
