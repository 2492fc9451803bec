//! Keep-alive connections to CRMs, by the address they were dialed to and the TLS name they
//! were verified for. Idle ones close after [`OUTBOUND_IDLE_TIMEOUT`] unused (servers close
//! theirs after 60 s or more; closing first avoids sending on a connection the server is
//! closing); those kept per key and in all are capped, which bounds the host's file
//! descriptors however many CRMs its tenants reach.

use crate::limits::{OUTBOUND_IDLE_PER_KEY, OUTBOUND_IDLE_TIMEOUT, OUTBOUND_IDLE_TOTAL};
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Keep-alive connections by the address they were dialed to and the TLS name they were
/// verified for. A connection is only ever taken for a request whose own checks (the
/// tenant's policy, then resolving and checking the address) led to exactly that key, so
/// pooling skips the handshake, never a check.
#[derive(Default)]
pub(super) struct Pool {
    idle: Mutex<IdleSet>,
}

#[derive(Default)]
struct IdleSet {
    by_key: HashMap<PoolKey, Vec<Idle>>,
    /// Connections in `by_key`, all keys together.
    total: usize,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(super) struct PoolKey {
    pub addr: SocketAddr,
    /// The name the certificate was checked against; `None` for plain HTTP.
    pub tls_name: Option<String>,
    /// The guest thread whose runtime drives the connection (`None` off the guest threads):
    /// a call reuses only its own thread's connections, so its exchange never waits for
    /// another thread to wake up.
    pub thread: Option<usize>,
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

impl Idle {
    fn usable(&self) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < OUTBOUND_IDLE_TIMEOUT
    }
}

impl Pool {
    /// The most recently used idle connection for `key` that is still open.
    pub fn take(&self, key: &PoolKey) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = crate::lock(&self.idle);
        let IdleSet { by_key, total } = &mut *idle;
        let list = by_key.get_mut(key)?;
        while let Some(c) = list.pop() {
            *total -= 1;
            if c.usable() {
                return Some(c.sender);
            }
        }
        by_key.remove(key);
        None
    }

    pub fn put(&self, key: PoolKey, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = crate::lock(&self.idle);
        if idle.total >= OUTBOUND_IDLE_TOTAL {
            idle.by_key.retain(|_, list| {
                list.retain(Idle::usable);
                !list.is_empty()
            });
            idle.total = idle.by_key.values().map(Vec::len).sum();
        }
        if idle.total >= OUTBOUND_IDLE_TOTAL {
            return;
        }
        let list = idle.by_key.entry(key).or_default();
        if list.len() < OUTBOUND_IDLE_PER_KEY {
            list.push(Idle { sender, since: Instant::now() });
            idle.total += 1;
        }
    }

    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().total
    }
}

/// A connection lent to one exchange. [`Lease::release`] gives it back once the response
/// was read to its end; dropped instead (an error, a cap, a timeout mid-body), the
/// connection closes, so a half-read response can never reach the next request.
pub struct Lease {
    pub(super) conn: Option<(PoolKey, SendRequest<Full<Bytes>>)>,
    pub(super) pool: Arc<Pool>,
}

impl Lease {
    pub fn release(mut self) {
        if let Some((key, sender)) = self.conn.take() {
            self.pool.put(key, sender);
        }
    }
}

