//! Allocation latency with durability on (every grant is fsynced and renamed
//! into place before `allocate` returns).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-idmap cargo bench -p idmap --bench alloc`
//! Knobs: `IDMAP_BENCH_CYCLES` (default 10000), `IDMAP_BENCH_PROCS` (8),
//! `IDMAP_BENCH_LIVE` (pre-filled pods for the large-ledger row, 10000).
//!
//! Each process keeps a window of 4 live pods (allocate a new one, release
//! the oldest). Every hold is logged with CLOCK_MONOTONIC times, and the
//! parent checks that no two holds of the same host uid ever overlapped in
//! time, across all processes.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use idmap::ledger::{encode, LEDGER_FILE};
use idmap::state::{Origin, PodEntry, State};
use idmap::{Allocator, IdRange, Mapping, PodMapping, Pools, ID_BLOCK};

const WINDOW: usize = 4;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pools() -> Pools {
    let pool = IdRange::new(ID_BLOCK, u32::MAX - ID_BLOCK).expect("pool");
    Pools::new(pool, pool, ID_BLOCK).expect("pools")
}

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes, unlike
/// `Instant`.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    u64::try_from(ts.tv_sec).expect("secs") * 1_000_000_000 + u64::try_from(ts.tv_nsec).expect("ns")
}

/// One hold of a host uid range: `[from, to)` in monotonic ns.
#[derive(Clone, Copy, Debug)]
struct Hold {
    host: u32,
    from: u64,
    to: u64,
}

#[derive(Default)]
struct Samples {
    alloc: Vec<Duration>,
    release: Vec<Duration>,
    holds: Vec<Hold>,
}

/// `cycles` allocate+release cycles under pod names `prefix-N`.
fn run_cycles(a: &Allocator, prefix: &str, cycles: usize, label: &str) -> Samples {
    let mut s = Samples::default();
    let mut live: VecDeque<(String, u32, u64)> = VecDeque::new();
    let step = (cycles / 10).max(1);
    for i in 0..cycles {
        let pod = format!("{prefix}-{i}");
        let t = Instant::now();
        let m = a.allocate(&pod).expect("allocate");
        s.alloc.push(t.elapsed());
        live.push_back((pod, m.uid.host_id(), mono_ns()));
        if live.len() > WINDOW {
            let (old, host, from) = live.pop_front().expect("window");
            let to = mono_ns();
            let t = Instant::now();
            a.release(&old).expect("release").expect("was held");
            s.release.push(t.elapsed());
            s.holds.push(Hold { host, from, to });
        }
        if (i + 1) % step == 0 {
            eprintln!("  [{label}] {}/{cycles} cycles", i + 1);
        }
    }
    for (pod, host, from) in live {
        let to = mono_ns();
        a.release(&pod).expect("release");
        s.holds.push(Hold { host, from, to });
    }
    s
}

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort_unstable();
    v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn row(name: &str, s: &mut Samples, wall: Duration) {
    let ops = s.alloc.len() + s.release.len();
    println!(
        "| {name:<34} | {:>6} | {:>10} | {:>10} | {:>11} | {:>11} | {:>8.0} |",
        s.alloc.len(),
        ms(pct(&mut s.alloc, 50)),
        ms(pct(&mut s.alloc, 99)),
        ms(pct(&mut s.release, 50)),
        ms(pct(&mut s.release, 99)),
        ops as f64 / wall.as_secs_f64()
    );
}

/// Panics if two holds of the same host uid overlap in time.
fn check_no_overlap(holds: &mut [Hold]) {
    holds.sort_by_key(|h| (h.host, h.from));
    for w in holds.windows(2) {
        if w[0].host == w[1].host {
            assert!(
                w[0].to <= w[1].from,
                "host uid {} held twice at once: {:?} and {:?}",
                w[0].host,
                w[0],
                w[1]
            );
        }
    }
}

fn worker(dir: &Path, id: usize, cycles: usize) {
    let a = Allocator::new(dir, pools()).expect("allocator");
    let s = run_cycles(&a, &format!("w{id}"), cycles, &format!("proc {id}"));
    let mut out = String::new();
    for d in &s.alloc {
        out.push_str(&format!("A {}\n", d.as_nanos()));
    }
    for d in &s.release {
        out.push_str(&format!("R {}\n", d.as_nanos()));
    }
    for h in &s.holds {
        out.push_str(&format!("H {} {} {}\n", h.host, h.from, h.to));
    }
    std::fs::write(dir.join(format!("worker-{id}.txt")), out).expect("write samples");
}

fn read_worker(dir: &Path, id: usize, into: &mut Samples) {
    let text = std::fs::read_to_string(dir.join(format!("worker-{id}.txt"))).expect("samples");
    for line in text.lines() {
        let f: Vec<u64> = line[2..]
            .split(' ')
            .map(|x| x.parse().expect("num"))
            .collect();
        match &line[..1] {
            "A" => into.alloc.push(Duration::from_nanos(f[0])),
            "R" => into.release.push(Duration::from_nanos(f[0])),
            _ => into.holds.push(Hold {
                host: u32::try_from(f[0]).expect("host"),
                from: f[1],
                to: f[2],
            }),
        }
    }
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("idmap-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
}

fn main() {
    if let Ok(dir) = std::env::var("IDMAP_BENCH_DIR") {
        let id = env_usize("IDMAP_BENCH_ID", 0);
        return worker(Path::new(&dir), id, env_usize("IDMAP_BENCH_CYCLES", 10_000));
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and
    // gets a quick smoke run instead of the full benchmark.
    let full = std::env::args().any(|a| a == "--bench");
    let (dc, dl) = if full { (10_000, 10_000) } else { (40, 100) };
    let cycles = env_usize("IDMAP_BENCH_CYCLES", dc);
    let procs = env_usize("IDMAP_BENCH_PROCS", 8);
    let live = env_usize("IDMAP_BENCH_LIVE", dl);
    let base = scratch();
    let fs = idmap::mount::fs_name(base.path()).unwrap_or("unknown");
    eprintln!(
        "idmap allocation benchmark: ledger under {} ({fs}), fsync on, window of {WINDOW} live pods per process",
        base.path().display()
    );
    let mut results: Vec<(String, Samples, Duration)> = Vec::new();

    eprintln!("1/3: {cycles} cycles in one process");
    let dir = base.path().join("single");
    let a = Allocator::new(&dir, pools()).expect("allocator");
    let t = Instant::now();
    let mut s = run_cycles(&a, "p", cycles, "1 proc");
    let wall = t.elapsed();
    check_no_overlap(&mut s.holds);
    assert!(a.list().expect("list").is_empty());
    results.push((format!("1 process, {cycles} cycles"), s, wall));

    eprintln!("2/3: {procs} processes x {cycles} cycles at once");
    let dir = base.path().join("multi");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let exe = std::env::current_exe().expect("current_exe");
    let t = Instant::now();
    let mut children: Vec<Child> = (0..procs)
        .map(|i| {
            Command::new(&exe)
                .env("IDMAP_BENCH_DIR", &dir)
                .env("IDMAP_BENCH_ID", i.to_string())
                .env("IDMAP_BENCH_CYCLES", cycles.to_string())
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    for c in &mut children {
        assert!(c.wait().expect("wait").success(), "worker failed");
    }
    let wall = t.elapsed();
    let mut s = Samples::default();
    for i in 0..procs {
        read_worker(&dir, i, &mut s);
    }
    check_no_overlap(&mut s.holds);
    let a = Allocator::new(&dir, pools()).expect("allocator");
    assert!(a.list().expect("list").is_empty());
    results.push((format!("{procs} processes, {cycles} cycles each"), s, wall));

    let big_cycles = (cycles / 10).max(1);
    eprintln!("3/3: {big_cycles} cycles in one process with {live} other pods in the ledger");
    let dir = base.path().join("large");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut state = State::default();
    for k in 0..live {
        let host = u32::try_from(k + 1).expect("k") * ID_BLOCK;
        state
            .insert(PodEntry {
                root: None,
                pod: format!("{:064x}", k),
                origin: Origin::Allocated,
                created: 0,
                mapping: PodMapping::symmetric(Mapping::new(0, host, ID_BLOCK).expect("m")),
            })
            .expect("insert");
    }
    std::fs::write(dir.join(LEDGER_FILE), encode(&state)).expect("ledger");
    let a = Allocator::new(&dir, pools()).expect("allocator");
    let t = Instant::now();
    let mut s = run_cycles(&a, "big", big_cycles, "large ledger");
    let wall = t.elapsed();
    check_no_overlap(&mut s.holds);
    results.push((format!("1 process, {live} live pods"), s, wall));

    println!();
    println!(
        "| {:<34} | {:>6} | {:>10} | {:>10} | {:>11} | {:>11} | {:>8} |",
        "scenario", "cycles", "alloc p50", "alloc p99", "release p50", "release p99", "ops/s"
    );
    println!(
        "|{:-<36}|{:-<8}|{:-<12}|{:-<12}|{:-<13}|{:-<13}|{:-<10}|",
        "", "", "", "", "", "", ""
    );
    for (name, s, wall) in &mut results {
        row(name, s, *wall);
    }
    println!("no host uid was ever held by two pods at once (checked over all holds)");
    std::io::stdout().flush().expect("flush");
}
