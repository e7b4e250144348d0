//! A TCP relay between the `rtt` scenario's namespace and the database,
//! optionally delaying every byte by a fixed time in each direction.
//!
//! The relay is needed whatever the delay: the database may listen on
//! 127.0.0.1 only (the system server does, and its configuration is not
//! ours to change), which a namespace cannot reach, so the relay listens
//! on the veth's host address and connects to the database locally. Where
//! the kernel has no netem, the relay also adds the delay: each chunk read
//! is written on after `one_way` (in order, so the stream is intact).
//! A relay-made delay comes out a little longer than asked (thread
//! wake-ups, the relay's own copies), so the scenario measures the round
//! trip it got.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running relay; dropping it stops accepting (open relayed
/// connections end with their peers).
///
/// Plain threads rather than tasks: `std::thread::sleep` keeps to the
/// delay within tens of microseconds, where tokio's millisecond timer
/// would turn 1 ms into up to 2.
pub struct DelayProxy {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accepting thread, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

impl DelayProxy {
    /// Listens on `listen` (port 0: any free port) and relays each
    /// connection to `target`, delaying each direction by `one_way`.
    pub fn start(
        listen: SocketAddr,
        target: SocketAddr,
        one_way: Duration,
    ) -> anyhow::Result<DelayProxy> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                std::thread::spawn(move || match TcpStream::connect(target) {
                    Ok(server) => relay(client, server, one_way),
                    Err(e) => eprintln!("delay proxy: connecting to {target}: {e}"),
                });
            }
        });
        Ok(DelayProxy { addr, stop })
    }
}

/// Relays both directions until either side closes.
fn relay(client: TcpStream, server: TcpStream, one_way: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pipe(client, server, one_way));
    pipe(server2, client2, one_way);
    let _ = up.join();
}

/// Copies `from` to `to`, each chunk `delay` after it was read. A reader
/// thread queues chunks with their due time and this one writes them when
/// due, so a chunk's delay does not hold up the reading of the next one.
fn pipe(from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let Ok(mut reader_side) = from.try_clone() else {
        return;
    };
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader_side.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    while let Ok((due, chunk)) = rx.recv() {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if to.write_all(&chunk).is_err() {
            break;
        }
    }
    // The peer closed (or failed): pass the close on, and end the reader.
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
    let _ = reader.join();
}

/// `url` with its host and port replaced by `addr`
/// (`postgres://user@host:port/db?...` form only).
pub fn url_via(url: &str, addr: SocketAddr) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| anyhow::anyhow!("rtt needs a postgres:// URL"))?;
    let (userinfo, hostpart) = match rest.split_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let tail_at = hostpart.find(['/', '?']).unwrap_or(hostpart.len());
    let tail = &hostpart[tail_at..];
    Ok(match userinfo {
        Some(u) => format!("{scheme}://{u}@{addr}{tail}"),
        None => format!("{scheme}://{addr}{tail}"),
    })
}

/// The database's address in `url` (host and port, port 5432 if absent),
/// resolved.
pub fn target_of(url: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("rtt needs a postgres:// URL"))?;
    let hostpart = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = &hostpart[..hostpart.find(['/', '?']).unwrap_or(hostpart.len())];
    let with_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    };
    with_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("rtt: {with_port} resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_via_replaces_only_host_and_port() {
        let addr: SocketAddr = "10.213.0.1:40000".parse().unwrap();
        assert_eq!(
            url_via(
                "postgres://postgres@127.0.0.1:5432/db_1?sslmode=disable",
                addr
            )
            .unwrap(),
            "postgres://postgres@10.213.0.1:40000/db_1?sslmode=disable"
        );
        assert_eq!(
            url_via("postgres://localhost/db", addr).unwrap(),
            "postgres://10.213.0.1:40000/db"
        );
        assert!(url_via("host=x dbname=y", addr).is_err());
    }

    #[test]
    fn target_of_defaults_the_port() {
        assert_eq!(
            target_of("postgres://u:p@127.0.0.1/db").unwrap(),
            "127.0.0.1:5432".parse().unwrap()
        );
        assert_eq!(
            target_of("postgres://u@127.0.0.1:6000/db?x=1").unwrap(),
            "127.0.0.1:6000".parse().unwrap()
        );
    }

    #[test]
    fn the_relay_delays_each_direction_and_passes_the_bytes_on() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        });
        let proxy = DelayProxy::start(
            "127.0.0.1:0".parse().unwrap(),
            target,
            Duration::from_millis(20),
        )
        .unwrap();
        let mut c = TcpStream::connect(proxy.addr).unwrap();
        let t = Instant::now();
        c.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        assert!(
            t.elapsed() >= Duration::from_millis(40),
            "{:?}",
            t.elapsed()
        );
    }
}
