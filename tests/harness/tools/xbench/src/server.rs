//! The Linux baseline guest's in-memory HTTP key-value server: `PUT /kv/KEY`, `GET /kv/KEY`,
//! persistent connections, one thread per connection. It serves the same requests the unikernel's
//! kv-app does, from RAM (as busybox httpd would from tmpfs), so that dom0 can run the same client
//! against both guests.

use crate::http::{drain_body, read_head};
use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Store = Arc<Mutex<HashMap<String, Arc<Vec<u8>>>>>;

/// Most values held at once (bounds the guest's memory use).
const MAX_VALUES_BYTES: usize = 96 << 20;

/// Serves on `port` forever.
pub fn serve(port: u16) -> io::Result<()> {
    let l = TcpListener::bind(("0.0.0.0", port))?;
    let store: Store = Arc::default();
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        let store = store.clone();
        std::thread::spawn(move || {
            let _ = connection(s, &store);
        });
    }
    Ok(())
}

fn answer(w: &mut TcpStream, code: u16, body: &[u8], close: bool) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        404 => "Not Found",
        413 => "Payload Too Large",
        _ => "Bad Request",
    };
    let conn = if close { "close" } else { "keep-alive" };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(body)
}

fn connection(s: TcpStream, store: &Store) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::with_capacity(64 * 1024, s);
    while let Some(h) = read_head(&mut r)? {
        let mut it = h.start.split_ascii_whitespace();
        let (method, path) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
        let key = path.strip_prefix("/kv/").map(str::to_string);
        match (method, key) {
            ("PUT", Some(k)) => {
                let mut v = Vec::with_capacity(h.content_length);
                drain_body(&mut r, h.content_length, Some(&mut v))?;
                let mut st = store.lock().map_err(|_| io::Error::other("poisoned"))?;
                let used: usize = st.values().map(|v| v.len()).sum();
                if used + v.len() > MAX_VALUES_BYTES {
                    drop(st);
                    answer(&mut w, 413, b"", h.close)?;
                } else {
                    st.insert(k, Arc::new(v));
                    drop(st);
                    answer(&mut w, 201, b"", h.close)?;
                }
            }
            ("GET", Some(k)) => {
                drain_body(&mut r, h.content_length, None)?;
                let v = store
                    .lock()
                    .map_err(|_| io::Error::other("poisoned"))?
                    .get(&k)
                    .cloned();
                match v {
                    Some(v) => answer(&mut w, 200, &v, h.close)?,
                    None => answer(&mut w, 404, b"", h.close)?,
                }
            }
            _ => {
                answer(&mut w, 400, b"", true)?;
                return Ok(());
            }
        }
        if h.close {
            return Ok(());
        }
    }
    Ok(())
}
