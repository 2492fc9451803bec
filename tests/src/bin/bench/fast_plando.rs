//! A fast Plando `POST /contact_details` on loopback: the documented wire format (form body
//! with `access_key`, `phone`, `attr`, `search_options`; `{"err": "0", "contacts": [...]}`),
//! one contact, nothing recorded, so it never becomes what the benchmark measures.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use std::convert::Infallible;
use std::net::SocketAddr;

pub const TOKEN: &str = "bench-token";
pub const PHONE: &str = "972501234567";

/// Serves on a thread of its own (one-thread runtime) until the process ends.
pub fn start() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::Builder::new()
        .name("fast-plando".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    stream.set_nodelay(true).unwrap();
                    tokio::spawn(async move {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service_fn(answer)).await;
                    });
                }
            })
        })
        .unwrap();
    addr
}

async fn answer(req: hyper::Request<hyper::body::Incoming>) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path_ok = req.uri().path() == "/contact_details";
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let (mut key, mut phone) = (String::new(), String::new());
    for (k, v) in form_urlencoded::parse(&body) {
        match &*k {
            "access_key" => key = v.into_owned(),
            "phone" => phone = v.into_owned(),
            _ => {}
        }
    }
    let json: &[u8] = if !path_ok {
        br#"{"err":"404","errdesc":"no such endpoint"}"#
    } else if key != TOKEN {
        br#"{"err":"401","errdesc":"invalid access key"}"#
    } else if phone == PHONE {
        br#"{"err":"0","errdesc":"","contacts":[{"id":"501","first_name":"Dana","last_name":"Levi","phone":"972501234567","email":"dana@example.com","category_1":"gold"}]}"#
    } else {
        br#"{"err":"0","errdesc":"","contacts":[]}"#
    };
    let resp = hyper::Response::builder().header("content-type", "application/json").body(Full::new(Bytes::from_static(json))).unwrap();
    Ok(resp)
}
