//! Connections: how many the API holds open and how long a client may take to say what it
//! wants. hyper's HTTP/1.1 server does the work (its header-read timer on tokio's clock, its
//! head buffer); this module accepts, counts and shuts down. A connection past the cap gets a
//! `503` it can read and is closed, so thousands of idle or trickling clients cost a bounded
//! amount of memory, and each of them is gone within `header_timeout` unless it sends a
//! request. HTTP/1.1 only: every client of the API speaks it, and h2's many streams per
//! connection would need limits of their own.

use crate::limits::{FrontDoor, HEAD_BUFFER};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// How long a shutdown waits for requests in flight (a call's deadline is 15 s by default).
const DRAIN: Duration = Duration::from_secs(30);

/// How long a connection turned away may take to read its answer.
const LINGER: Duration = Duration::from_millis(500);

/// What a connection past `--max-connections` reads before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
connection: close\r\ncontent-length: 109\r\n\r\n{\"error\":{\"kind\":\"overloaded\",\"message\":\"the host holds as many connections as it may (--max-connections)\"}}\n";

/// Accepts connections on `listener` and serves `app` on each until `shutdown` resolves; then
/// stops accepting, lets requests in flight finish (at most [`DRAIN`]) and returns.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    front: &FrontDoor,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: tower::Service<axum::extract::Request<hyper::body::Incoming>, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let places = Arc::new(Semaphore::new(front.max_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(front.header_timeout).max_buf_size(HEAD_BUFFER);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors or memory: wait for some to come back instead
                    // of spinning (the connections holding them time out).
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            turn_away(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that hangs up or times out ends its connection; nothing to report.
            let _ = conn.await;
            drop(place);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutting down with requests still in flight after {DRAIN:?}");
    }
    Ok(())
}

/// Answers a connection past the cap, then reads (and drops) what the client sent for a
/// moment before closing: closing with unread bytes would reset the connection, and a reset
/// can cost the client the answer it was about to read.
fn turn_away(stream: TcpStream) {
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let _ = tokio::time::timeout(LINGER, async {
            stream.write_all(TOO_MANY).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            std::io::Result::Ok(())
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_turn_away_answer_is_well_formed() {
        let text = std::str::from_utf8(super::TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
        assert_eq!(length, body.len());
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
