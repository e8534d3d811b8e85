//! Load generator for `bench/bench.sh`: connection setup rate and held
//! connections (for RSS), plus a trivial target.
//!
//! - `loadgen sink LISTEN`: accepts, reads to EOF, closes.
//! - `loadgen connrate ADDR SECONDS CONCURRENCY`: connect, send 1 byte,
//!   half-close, wait for EOF; prints completed connections per second.
//! - `loadgen hold ADDR COUNT`: opens COUNT connections, prints `held`,
//!   keeps them until stdin closes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> anyhow::Result<T> {
    args.get(i).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow::anyhow!("argument {i} ({what}) missing or invalid"))
}

async fn one(addr: SocketAddr) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"x").await?;
    s.shutdown().await?;
    let mut buf = [0u8; 64];
    while s.read(&mut buf).await? > 0 {}
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("sink") => {
            let l = TcpListener::bind(arg::<SocketAddr>(&args, 2, "listen")?).await?;
            loop {
                let (mut s, _) = l.accept().await?;
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        }
        Some("connrate") => {
            let addr: SocketAddr = arg(&args, 2, "addr")?;
            let secs: f64 = arg(&args, 3, "seconds")?;
            let conc: usize = arg(&args, 4, "concurrency")?;
            let end = Instant::now() + Duration::from_secs_f64(secs);
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..conc {
                tasks.push(tokio::spawn(async move {
                    let (mut ok, mut err) = (0u64, 0u64);
                    while Instant::now() < end {
                        match one(addr).await {
                            Ok(()) => ok += 1,
                            Err(_) => err += 1,
                        }
                    }
                    (ok, err)
                }));
            }
            let (mut ok, mut err) = (0, 0);
            for t in tasks {
                let (o, e) = t.await?;
                ok += o;
                err += e;
            }
            let rate = ok as f64 / start.elapsed().as_secs_f64();
            println!("{rate:.0} {err}");
        }
        Some("hold") => {
            let addr: SocketAddr = arg(&args, 2, "addr")?;
            let count: usize = arg(&args, 3, "count")?;
            let mut held = Vec::with_capacity(count);
            for _ in 0..count {
                let mut s = TcpStream::connect(addr).await?;
                s.write_all(b"x").await?;
                held.push(s);
            }
            println!("held");
            let mut stdin = tokio::io::stdin();
            let mut b = [0u8; 1];
            let _ = stdin.read(&mut b).await;
        }
        _ => anyhow::bail!("usage: loadgen sink LISTEN | connrate ADDR SECONDS CONC | hold ADDR COUNT"),
    }
    Ok(())
}
