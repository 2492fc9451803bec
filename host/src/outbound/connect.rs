//! The connector: the last step before bytes leave the host. It resolves a name once, checks
//! every address it got (unless the operator routed the host with `--upstream`), and dials
//! exactly the address it checked, so a DNS answer cannot change between the check and the
//! connection (DNS rebinding). TLS and the HTTP/1 handshake follow.
//!
//! Name resolution and dialing are traits so tests can prove what would have been dialed
//! without any traffic leaving the machine.

use crate::egress::is_public;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi_http::bindings::http::types::{DnsErrorPayload, ErrorCode};

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

impl Connector {
    pub fn new(resolver: Arc<dyn Resolve>, dialer: Arc<dyn Dial>) -> Self {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
        let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        Connector { resolver, dialer, tls: Arc::new(tls) }
    }

    /// Resolves, checks and dials `target`, all within `timeout`, and returns an HTTP/1
    /// sender on the new connection.
    pub async fn connect(&self, target: &Target<'_>, timeout: Duration) -> Result<SendRequest<Full<Bytes>>, ConnectError> {
        match tokio::time::timeout(timeout, self.connect_inner(target)).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Failed(ErrorCode::ConnectionTimeout)),
        }
    }

    async fn connect_inner(&self, target: &Target<'_>) -> Result<SendRequest<Full<Bytes>>, ConnectError> {
        let addrs = self.addresses(target).await?;
        let mut last = ErrorCode::ConnectionRefused;
        let mut stream = None;
        for addr in addrs {
            match self.dialer.dial(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = io_error_code(&e),
            }
        }
        let stream = stream.ok_or(ConnectError::Failed(last))?;
        if target.use_tls {
            let name = rustls::pki_types::ServerName::try_from(target.host.to_string())
                .map_err(|_| ConnectError::Failed(dns_error("invalid TLS server name")))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, stream)
                .await
                .map_err(|e| {
                    tracing::debug!("TLS handshake with {} failed: {e}", target.host);
                    ConnectError::Failed(ErrorCode::TlsProtocolError)
                })?;
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(stream)).await
        }
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
    // The connection task ends when the sender is dropped (or the peer closes).
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("outbound connection ended: {e}");
        }
    });
    Ok(sender)
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
    struct Table(Vec<(&'static str, IpAddr)>);

    impl Resolve for Table {
        fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
            let found: Vec<_> = self.0.iter().filter(|(h, _)| *h == host).map(|(_, ip)| SocketAddr::new(*ip, port)).collect();
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
        let table = Table(table.into_iter().map(|(h, ip)| (h, ip.parse().unwrap())).collect());
        let dialer = Arc::new(Recorder::default());
        (Connector::new(Arc::new(table), dialer.clone()), dialer)
    }

    async fn attempt(c: &Connector, host: &str, routed: bool) -> ConnectError {
        let target = Target { host, port: 443, use_tls: true, routed };
        c.connect(&target, Duration::from_secs(1)).await.expect_err("the recorder dials nothing")
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
}
