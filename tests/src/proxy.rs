//! A fault-injecting TCP proxy for cluster tests: forwards `127.0.0.1:<port>` to a target until
//! told to cut the link, then holds every connection silent (bytes are neither forwarded nor
//! refused, as across a network partition) until healed, when the held connections are closed
//! and new ones pass again.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Debug, Default)]
struct State {
    /// Where new connections go (changed by [`FaultProxy::retarget`]).
    target: Option<SocketAddr>,
    cut: bool,
    /// Bumped by every heal: connections of an older generation are closed.
    generation: u64,
    /// Both sockets of every open connection, to close them on heal.
    open: Vec<(u64, TcpStream, TcpStream)>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    forwarded: AtomicU64,
}

/// The proxy; stops (and closes everything) when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards to `target`.
    pub fn start(target: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        shared.state.lock().unwrap().target = Some(target);
        let s = Arc::clone(&shared);
        thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(FaultProxy { addr, shared })
    }

    /// Where clients connect instead of the target.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// From now on nothing passes in either direction; connections stay open.
    pub fn cut(&self) {
        self.shared.state.lock().unwrap().cut = true;
        self.shared.changed.notify_all();
    }

    /// Ends the cut: the connections held during it are closed, new ones pass.
    pub fn heal(&self) {
        let mut st = self.shared.state.lock().unwrap();
        st.cut = false;
        st.generation += 1;
        let generation = st.generation;
        for (_, a, b) in st.open.iter().filter(|(g, _, _)| *g < generation) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        st.open.retain(|(g, _, _)| *g >= generation);
        drop(st);
        self.shared.changed.notify_all();
    }

    /// New connections go to `target` from now on (a restarted server on another port);
    /// open ones stay where they are.
    pub fn retarget(&self, target: SocketAddr) {
        self.shared.state.lock().unwrap().target = Some(target);
    }

    /// Bytes forwarded so far (both directions).
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut st = self.shared.state.lock().unwrap();
        for (_, a, b) in st.open.drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        drop(st);
        self.shared.changed.notify_all();
        // Wakes the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        let Some(target) = shared.state.lock().unwrap().target else {
            continue;
        };
        let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let generation = {
            let mut st = shared.state.lock().unwrap();
            let g = st.generation;
            if let (Ok(a), Ok(b)) = (client.try_clone(), upstream.try_clone()) {
                st.open.push((g, a, b));
            }
            g
        };
        for (from, to) in [(&client, &upstream), (&upstream, &client)] {
            let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                continue;
            };
            let s = Arc::clone(&shared);
            let _ = thread::Builder::new()
                .name("fault-proxy-pump".into())
                .spawn(move || pump(from, to, generation, s));
        }
    }
}

/// Copies `from` to `to`; while the link is cut, holds what it read (data or the end of the
/// stream) without passing it on, as a partition would.
fn pump(mut from: TcpStream, mut to: TcpStream, generation: u64, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = from.read(&mut buf).unwrap_or(0);
        {
            let mut st = shared.state.lock().unwrap();
            while st.cut && st.generation == generation && !shared.stop.load(Ordering::SeqCst) {
                st = shared.changed.wait(st).unwrap();
            }
            if st.generation != generation || shared.stop.load(Ordering::SeqCst) {
                return;
            }
        }
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        shared.forwarded.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown(Shutdown::Write);
}
