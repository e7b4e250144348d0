//! A TCP proxy in front of PostgreSQL that can stop forwarding: the
//! connections stay open but nothing gets through any more, as with a
//! half-open connection or a server that hangs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Proxy {
    port: u16,
    frozen: watch::Sender<bool>,
    stopped: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts forwarding 127.0.0.1:<port()> to 127.0.0.1:`upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (frozen, _) = watch::channel(false);
        let stopped = Arc::new(AtomicBool::new(false));
        let proxy = Proxy {
            port,
            frozen,
            stopped: Arc::clone(&stopped),
        };
        let frozen = proxy.frozen.clone();
        tokio::spawn(async move {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let frozen = frozen.subscribe();
                tokio::spawn(async move {
                    if wait_thawed(frozen.clone()).await.is_none() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pump(client_read, server_write, frozen.clone()));
                    tokio::spawn(pump(server_read, client_write, frozen));
                });
            }
        });
        proxy
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on nothing gets through, in either direction, on old or
    /// new connections; nothing is closed either.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.thaw();
    }
}

/// Resolves once not frozen; `None` when the proxy is gone.
async fn wait_thawed(mut frozen: watch::Receiver<bool>) -> Option<()> {
    frozen.wait_for(|f| !*f).await.ok().map(drop)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read while frozen are held, never forwarded until thawed.
        if wait_thawed(frozen.clone()).await.is_none() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
