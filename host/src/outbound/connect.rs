//! The connector: the last step before bytes leave the host. It resolves a name once, checks
//! every address it got (unless the operator routed the host with `--upstream`), and dials
//! exactly the address it checked, so a DNS answer cannot change between the check and the
//! connection (DNS rebinding). TLS and the HTTP/1 handshake follow. Connections are kept
//! alive and reused, keyed by the checked address and TLS name, so reuse never skips a check.
//!
//! Name resolution and dialing are traits so tests can prove what would have been dialed
//! without any traffic leaving the machine.

use super::pool::{Lease, Pool, PoolKey};
use crate::egress::is_public;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi_http::p2::bindings::http::types::{DnsErrorPayload, ErrorCode};

/// Turns a host name into addresses.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>>;
}

/// Opens a TCP connection to one address.
pub trait Dial: Send + Sync + 'static {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>>;
}

/// The operating system's resolver.
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Plain TCP.
pub struct TcpDialer;

impl Dial for TcpDialer {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            // Requests are small and written whole; do not wait for an ACK to send the body.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        })
    }
}

/// Why a connection was not made.
#[derive(Debug)]
pub enum ConnectError {
    /// The policy refused the address the name resolved to; the message says which.
    Denied(String),
    Failed(ErrorCode),
}

/// Where one attempt connects: the host as the request names it (or as `--upstream` routed
/// it), and whether that routing is the operator's (then loopback is fine: emulators).
pub struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub use_tls: bool,
    pub routed: bool,
}

#[derive(Clone)]
pub struct Connector {
    resolver: Arc<dyn Resolve>,
    dialer: Arc<dyn Dial>,
    tls: Arc<rustls::ClientConfig>,
    pool: Arc<Pool>,
}

impl Default for Connector {
    fn default() -> Self {
        Self::new(Arc::new(SystemResolver), Arc::new(TcpDialer))
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

/// Per-exchange time limits the connector applies.
#[derive(Clone, Copy)]
pub struct ExchangeTimeouts {
    /// Resolving, dialing, TLS and the HTTP handshake together (or waiting for an idle
    /// connection to be ready).
    pub connect: Duration,
    /// From the request written to the response head.
    pub first_byte: Duration,
}

impl Connector {
    pub fn new(resolver: Arc<dyn Resolve>, dialer: Arc<dyn Dial>) -> Self {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
        let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        Connector { resolver, dialer, tls: Arc::new(tls), pool: Arc::default() }
    }

    /// Sends `request` to `target`: resolves and checks the address first, every time, then
    /// uses an idle connection to that checked address if there is one, a new one otherwise.
    /// A pooled connection the server closed meanwhile is replaced when the request was not
    /// sent on it. The response's body is the caller's to read; then [`Lease::release`].
    pub async fn send(
        &self,
        target: &Target<'_>,
        t: ExchangeTimeouts,
        mut request: hyper::Request<Full<Bytes>>,
    ) -> Result<(hyper::Response<Incoming>, Lease), ConnectError> {
        let failed = ConnectError::Failed;
        let mut fresh = false;
        loop {
            let (key, mut sender, reused) = match tokio::time::timeout(t.connect, self.checkout(target, fresh)).await {
                Ok(r) => r?,
                Err(_) => return Err(failed(ErrorCode::ConnectionTimeout)),
            };
            let sent = tokio::time::timeout(t.first_byte, sender.try_send_request(request)).await;
            match sent {
                Err(_) => return Err(failed(ErrorCode::ConnectionReadTimeout)),
                Ok(Ok(response)) => return Ok((response, Lease { conn: Some((key, sender)), pool: self.pool.clone() })),
                Ok(Err(mut e)) => match e.take_message() {
                    // Not sent: the idle connection had been closed. Once more, on a new one.
                    Some(unsent) if reused => {
                        request = unsent;
                        fresh = true;
                    }
                    _ => return Err(failed(hyper_error(e.error()))),
                },
            }
        }
    }

    async fn checkout(&self, target: &Target<'_>, fresh: bool) -> Result<(PoolKey, SendRequest<Full<Bytes>>, bool), ConnectError> {
        let addrs = self.addresses(target).await?;
        let tls_name = target.use_tls.then(|| target.host.to_ascii_lowercase());
        let thread = crate::runtime::current_guest_thread();
        if !fresh {
            for addr in &addrs {
                let key = PoolKey { addr: *addr, tls_name: tls_name.clone(), thread };
                while let Some(mut sender) = self.pool.take(&key) {
                    if sender.ready().await.is_ok() {
                        return Ok((key, sender, true));
                    }
                }
            }
        }
        let mut last = ErrorCode::ConnectionRefused;
        for addr in addrs {
            match self.dialer.dial(addr).await {
                Ok(stream) => {
                    let sender = self.handshake(target, stream).await?;
                    return Ok((PoolKey { addr, tls_name, thread }, sender, false));
                }
                Err(e) => last = io_error_code(&e),
            }
        }
        Err(ConnectError::Failed(last))
    }

    async fn handshake(&self, target: &Target<'_>, stream: TcpStream) -> Result<SendRequest<Full<Bytes>>, ConnectError> {
        if !target.use_tls {
            return handshake(TokioIo::new(stream)).await;
        }
        let name = rustls::pki_types::ServerName::try_from(target.host.to_string())
            .map_err(|_| ConnectError::Failed(dns_error("invalid TLS server name")))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, stream).await.map_err(|e| {
            tracing::debug!("TLS handshake with {} failed: {e}", target.host);
            ConnectError::Failed(ErrorCode::TlsProtocolError)
        })?;
        handshake(TokioIo::new(tls)).await
    }

    /// The addresses to dial, each one checked. A name that resolves to any non-public
    /// address is refused outright: a mixed answer is how rebinding attacks look.
    async fn addresses(&self, target: &Target<'_>) -> Result<Vec<SocketAddr>, ConnectError> {
        let addrs = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => self
                .resolver
                .resolve(target.host, target.port)
                .await
                .map_err(|e| ConnectError::Failed(dns_error(&e.to_string())))?,
        };
        if addrs.is_empty() {
            return Err(ConnectError::Failed(dns_error("no addresses")));
        }
        if !target.routed {
            if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
                let ip = bad.ip();
                return Err(ConnectError::Denied(if target.host.parse::<IpAddr>().is_ok() {
                    format!("{ip} is not a public address")
                } else {
                    format!("{} resolves to {ip}, which is not a public address", target.host)
                }));
            }
        }
        Ok(addrs)
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, ConnectError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|_| ConnectError::Failed(ErrorCode::ConnectionRefused))?;
    // The connection task ends when the last sender is dropped (or the peer closes).
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("outbound connection ended: {e}");
        }
    });
    Ok(sender)
}

/// What the guest is told when the exchange itself failed.
pub(super) fn hyper_error(e: &hyper::Error) -> ErrorCode {
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        ErrorCode::ConnectionTerminated
    } else if e.is_parse() {
        ErrorCode::HttpProtocolError
    } else if e.is_timeout() {
        ErrorCode::ConnectionReadTimeout
    } else {
        ErrorCode::InternalError(Some(e.to_string()))
    }
}

fn io_error_code(e: &io::Error) -> ErrorCode {
    match e.kind() {
        io::ErrorKind::TimedOut => ErrorCode::ConnectionTimeout,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => ErrorCode::ConnectionTerminated,
        _ => ErrorCode::ConnectionRefused,
    }
}

fn dns_error(rcode: &str) -> ErrorCode {
    ErrorCode::DnsError(DnsErrorPayload { rcode: Some(rcode.to_string()), info_code: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers from a fixed table; never touches the network.
    struct Table(Mutex<Vec<(&'static str, IpAddr)>>);

    impl Resolve for Table {
        fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
            let found: Vec<_> = self.0.lock().unwrap().iter().filter(|(h, _)| *h == host).map(|(_, ip)| SocketAddr::new(*ip, port)).collect();
            Box::pin(async move {
                if found.is_empty() {
                    Err(io::Error::new(io::ErrorKind::NotFound, "unknown name"))
                } else {
                    Ok(found)
                }
            })
        }
    }

    /// Records what it was asked to dial, and dials nothing.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<SocketAddr>>);

    impl Dial for Recorder {
        fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
            self.0.lock().unwrap().push(addr);
            Box::pin(async { Err(io::Error::new(io::ErrorKind::ConnectionRefused, "recorder dials nothing")) })
        }
    }

    fn connector(table: Vec<(&'static str, &str)>) -> (Connector, Arc<Recorder>) {
        let table = Table(Mutex::new(table.into_iter().map(|(h, ip)| (h, ip.parse().unwrap())).collect()));
        let dialer = Arc::new(Recorder::default());
        (Connector::new(Arc::new(table), dialer.clone()), dialer)
    }

    fn timeouts() -> ExchangeTimeouts {
        ExchangeTimeouts { connect: Duration::from_secs(1), first_byte: Duration::from_secs(1) }
    }

    async fn attempt(c: &Connector, host: &str, routed: bool) -> ConnectError {
        let target = Target { host, port: 443, use_tls: true, routed };
        let request = hyper::Request::get("/").body(Full::default()).unwrap();
        c.send(&target, timeouts(), request).await.err().expect("the recorder dials nothing")
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_never_dialed() {
        let (c, dialed) = connector(vec![
            ("metadata.evil.test", "169.254.169.254"),
            ("lan.evil.test", "10.0.0.7"),
            ("cgnat.evil.test", "100.64.1.1"),
            ("mcast.evil.test", "224.0.0.251"),
            ("mapped.evil.test", "::ffff:192.168.1.1"),
            ("compat.evil.test", "::7f00:1"),
            // One public and one private answer: the private one decides.
            ("mixed.evil.test", "93.184.216.34"),
            ("mixed.evil.test", "127.0.0.1"),
        ]);
        for host in ["metadata.evil.test", "lan.evil.test", "cgnat.evil.test", "mcast.evil.test", "mapped.evil.test", "compat.evil.test", "mixed.evil.test"] {
            match attempt(&c, host, false).await {
                ConnectError::Denied(why) => assert!(why.contains(host) && why.contains("not a public address"), "{why}"),
                other => panic!("{host}: {other:?}"),
            }
        }
        for ip in ["10.1.2.3", "169.254.169.254", "::1", "::ffff:127.0.0.1", "0.0.0.0", "fe80::1"] {
            assert!(matches!(attempt(&c, ip, false).await, ConnectError::Denied(_)), "{ip}");
        }
        assert!(dialed.0.lock().unwrap().is_empty(), "nothing was dialed: {:?}", dialed.0.lock().unwrap());
    }

    #[tokio::test]
    async fn the_checked_address_is_the_one_dialed() {
        let (c, dialed) = connector(vec![("crm.example.test", "93.184.216.34")]);
        assert!(matches!(attempt(&c, "crm.example.test", false).await, ConnectError::Failed(ErrorCode::ConnectionRefused)));
        assert_eq!(*dialed.0.lock().unwrap(), vec!["93.184.216.34:443".parse::<SocketAddr>().unwrap()]);
    }

    #[tokio::test]
    async fn operator_routes_may_reach_loopback() {
        let (c, dialed) = connector(vec![("localhost", "127.0.0.1")]);
        assert!(matches!(attempt(&c, "localhost", true).await, ConnectError::Failed(_)));
        assert_eq!(dialed.0.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn unknown_names_are_dns_errors() {
        let (c, dialed) = connector(vec![]);
        assert!(matches!(attempt(&c, "nowhere.test", false).await, ConnectError::Failed(ErrorCode::DnsError(_))));
        assert!(dialed.0.lock().unwrap().is_empty());
    }

    /// Dials one local server whatever address it is asked for (so "public" addresses can be
    /// exercised without leaving the machine), and counts the dials.
    struct ToLocal {
        to: SocketAddr,
        asked: Mutex<Vec<SocketAddr>>,
    }

    impl Dial for ToLocal {
        fn dial(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
            self.asked.lock().unwrap().push(addr);
            Box::pin(TcpStream::connect(self.to))
        }
    }

    /// A minimal HTTP/1.1 server on loopback: answers every request `ok`; with `one_shot`,
    /// closes each connection after its first answer without saying so (as a server whose
    /// keep-alive timer fired does).
    async fn server(one_shot: bool) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while let Ok(n) = s.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.is_err() || one_shot {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn get(c: &Connector, host: &str) -> Result<(), ConnectError> {
        use http_body_util::BodyExt;
        let target = Target { host, port: 80, use_tls: false, routed: false };
        let request = hyper::Request::get("/").body(Full::default()).unwrap();
        let (response, lease) = c.send(&target, timeouts(), request).await?;
        let body = response.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
        lease.release();
        Ok(())
    }

    fn pooled(local: SocketAddr) -> (Connector, Arc<Table>, Arc<ToLocal>) {
        let table = Arc::new(Table(Mutex::new(vec![("crm.example.test", "93.184.216.34".parse().unwrap())])));
        let dialer = Arc::new(ToLocal { to: local, asked: Mutex::default() });
        (Connector::new(table.clone(), dialer.clone()), table, dialer)
    }

    #[tokio::test]
    async fn a_connection_is_reused_only_after_the_address_is_checked_again() {
        let (c, table, dialer) = pooled(server(false).await);
        for _ in 0..5 {
            get(&c, "crm.example.test").await.expect("served");
        }
        assert_eq!(dialer.asked.lock().unwrap().len(), 1, "one connection carried five requests");
        assert_eq!(c.pool.idle_count(), 1);

        // The name now resolves to a private address: refused before the pool is looked at,
        // although an idle connection to the old address is there.
        *table.0.lock().unwrap() = vec![("crm.example.test", "10.0.0.7".parse().unwrap())];
        match get(&c, "crm.example.test").await {
            Err(ConnectError::Denied(why)) => assert!(why.contains("10.0.0.7"), "{why}"),
            other => panic!("{:?}", other.err()),
        }
        // A different public address is a different key: a new connection, not the old one.
        *table.0.lock().unwrap() = vec![("crm.example.test", "93.184.216.35".parse().unwrap())];
        get(&c, "crm.example.test").await.expect("served");
        let asked = dialer.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 2);
        assert_eq!(asked[1], "93.184.216.35:80".parse::<SocketAddr>().unwrap());
    }

    #[tokio::test]
    async fn a_response_not_read_to_its_end_never_returns_to_the_pool() {
        let (c, _, dialer) = pooled(server(false).await);
        let target = Target { host: "crm.example.test", port: 80, use_tls: false, routed: false };
        let request = hyper::Request::get("/").body(Full::default()).unwrap();
        let (_response, lease) = c.send(&target, timeouts(), request).await.expect("sent");
        drop(lease);
        assert_eq!(c.pool.idle_count(), 0);
        get(&c, "crm.example.test").await.expect("served");
        assert_eq!(dialer.asked.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_closed_is_replaced() {
        let (c, _, dialer) = pooled(server(true).await);
        for _ in 0..3 {
            get(&c, "crm.example.test").await.expect("served on a new connection");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(dialer.asked.lock().unwrap().len(), 3);
    }
}
