//! A minimal HTTP/1.1 client (dom0 side) and the message parsing shared with the server.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest header block accepted (client or server side).
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest body accepted (client or server side).
pub const MAX_BODY: usize = 64 << 20;

/// A parsed message head: the first line's tokens and the headers that matter here.
#[derive(Debug, Default)]
pub struct Head {
    /// The start line (request line or status line).
    pub start: String,
    /// `Content-Length`, 0 when absent.
    pub content_length: usize,
    /// The peer asked for `Connection: close`.
    pub close: bool,
}

/// Reads one message head; `Ok(None)` on a clean end of stream before any byte.
pub fn read_head<R: BufRead>(r: &mut R) -> io::Result<Option<Head>> {
    let mut head = Head::default();
    let mut total = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            if total == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof in head"));
        }
        total += n;
        if total > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if head.start.is_empty() {
            if l.is_empty() {
                continue;
            }
            head.start = l.to_string();
            continue;
        }
        if l.is_empty() {
            return Ok(Some(head));
        }
        if let Some((k, v)) = l.split_once(':') {
            let v = v.trim();
            if k.eq_ignore_ascii_case("content-length") {
                head.content_length = v
                    .parse()
                    .ok()
                    .filter(|&n| n <= MAX_BODY)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad length"))?;
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                head.close = true;
            }
        }
    }
}

/// Reads exactly `n` body bytes into a sink, returning how many arrived.
pub fn drain_body<R: Read>(r: &mut R, n: usize, keep: Option<&mut Vec<u8>>) -> io::Result<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = n;
    let mut keep = keep;
    while left > 0 {
        let want = left.min(buf.len());
        let got = r.read(&mut buf[..want])?;
        if got == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
        }
        if let Some(k) = keep.as_deref_mut() {
            k.extend_from_slice(&buf[..got]);
        }
        left -= got;
    }
    Ok(n)
}

/// The status code of a status line (`HTTP/1.1 200 OK`).
pub fn status_code(start: &str) -> Option<u16> {
    let mut it = start.split_ascii_whitespace();
    let proto = it.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    it.next()?.parse().ok()
}

/// One keep-alive client connection.
pub struct Client {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Client {
    /// Connects to `host:port` with `timeout` for connect, reads and writes.
    pub fn connect(host: &str, port: u16, timeout: Duration) -> io::Result<Client> {
        Client::connect_split(host, port, timeout, timeout)
    }

    /// Connects to `host:port` giving up after `connect_timeout`, with `io_timeout` for reads and
    /// writes (a short connect timeout polls a guest that is still booting finely).
    pub fn connect_split(
        host: &str,
        port: u16,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> io::Result<Client> {
        let timeout = io_timeout;
        let addr = format!("{host}:{port}");
        let sa = std::net::ToSocketAddrs::to_socket_addrs(&addr)?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
        let s = TcpStream::connect_timeout(&sa, connect_timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        Ok(Client {
            stream: BufReader::with_capacity(64 * 1024, s),
            host: host.to_string(),
        })
    }

    /// Sends one request (with `body`), reads the answer; returns the status and body length.
    /// The body is kept in `keep` when given.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        close: bool,
        keep: Option<&mut Vec<u8>>,
    ) -> io::Result<(u16, usize)> {
        let conn = if close { "close" } else { "keep-alive" };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n",
            self.host,
            body.len()
        );
        let w = self.stream.get_mut();
        w.write_all(head.as_bytes())?;
        for chunk in body.chunks(256 * 1024) {
            w.write_all(chunk)?;
        }
        let h = read_head(&mut self.stream)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no answer"))?;
        let code = status_code(&h.start)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
        let n = drain_body(&mut self.stream, h.content_length, keep)?;
        Ok((code, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_head_and_rejects_huge_lengths() {
        let mut r = io::Cursor::new(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec(),
        );
        let h = read_head(&mut r).unwrap().unwrap();
        assert_eq!(status_code(&h.start), Some(200));
        assert_eq!(h.content_length, 5);
        assert!(h.close);
        let mut body = Vec::new();
        assert_eq!(drain_body(&mut r, 5, Some(&mut body)).unwrap(), 5);
        assert_eq!(body, b"hello");

        let mut bad =
            io::Cursor::new(b"PUT /x HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n".to_vec());
        assert!(read_head(&mut bad).is_err());
        let mut short = io::Cursor::new(b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec());
        assert!(read_head(&mut short).is_err());
        let mut empty = io::Cursor::new(Vec::new());
        assert!(read_head(&mut empty).unwrap().is_none());
        assert_eq!(status_code("garbage"), None);
    }
}
