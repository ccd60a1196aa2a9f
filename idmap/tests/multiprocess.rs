//! Several processes at once, and processes killed at any instant.
//!
//! Workers are this test binary re-executed with `--exact worker --ignored`
//! and an `IDMAP_WORKER_MODE` in the environment.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use idmap::ledger::{Ledger, LockMode};
use idmap::PodMapping;

const PROCS: usize = 8;
const PODS_PER_PROC: usize = 500;
const SLOTS: u32 = 4096;

fn spawn_worker(mode: &str, dir: &Path, id: usize) -> Child {
    Command::new(std::env::current_exe().expect("current_exe"))
        .args([
            "--exact",
            "worker",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("IDMAP_WORKER_MODE", mode)
        .env("IDMAP_WORKER_DIR", dir)
        .env("IDMAP_WORKER_ID", id.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn worker")
}

/// Reads the child's stdout until a line equal to `want`.
fn wait_for_line(out: &mut BufReader<ChildStdout>, want: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).expect("read worker stdout");
        assert!(n > 0, "worker exited before printing {want}");
        // libtest prints "test worker ... " without a newline before the
        // worker's own output, so the marker may end a longer line.
        if line.trim_end().ends_with(want) {
            return;
        }
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(
            t.elapsed() < limit,
            "worker {} still running after {limit:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Not a test: the body of a worker process. Run by the tests below.
#[test]
#[ignore = "helper process for the multi-process tests"]
fn worker() {
    let Ok(mode) = std::env::var("IDMAP_WORKER_MODE") else {
        eprintln!("worker: helper for the multi-process tests; nothing to do when run directly");
        return;
    };
    let dir = std::env::var("IDMAP_WORKER_DIR").expect("IDMAP_WORKER_DIR");
    let id: usize = std::env::var("IDMAP_WORKER_ID")
        .expect("id")
        .parse()
        .expect("id");
    let a = common::allocator(Path::new(&dir), SLOTS);
    let mut out = std::io::stdout().lock();
    match mode.as_str() {
        "alloc" => {
            // Start together: wait for the parent's go file.
            let go = Path::new(&dir).join("go");
            while !go.exists() {
                std::thread::sleep(Duration::from_millis(1));
            }
            for i in 0..PODS_PER_PROC {
                let pod = format!("w{id}-p{i}");
                let m = a.allocate(&pod).expect("allocate");
                writeln!(out, "GOT {pod} {} {}", m.uid.host_id(), m.gid.host_id()).expect("stdout");
            }
        }
        "hold" => {
            let ledger = Ledger::open(&dir).expect("ledger");
            let _lock = ledger.lock(LockMode::Exclusive).expect("lock");
            writeln!(out, "LOCKED").expect("stdout");
            out.flush().expect("flush");
            std::thread::sleep(Duration::from_secs(120));
        }
        "churn" => {
            let mut n: u64 = u64::try_from(id).expect("id") * 7919;
            let mut announced = false;
            loop {
                n = n
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let pod = format!("c{}", (n >> 33) % 40);
                if (n >> 20) % 3 == 0 {
                    a.release(&pod).expect("release");
                } else {
                    a.allocate(&pod).expect("allocate");
                }
                if !announced {
                    writeln!(out, "READY").expect("stdout");
                    out.flush().expect("flush");
                    announced = true;
                }
            }
        }
        other => panic!("unknown worker mode {other}"),
    }
}

#[test]
fn eight_processes_allocate_500_pods_each_without_overlap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut children: Vec<Child> = (0..PROCS)
        .map(|i| spawn_worker("alloc", dir.path(), i))
        .collect();
    std::fs::write(dir.path().join("go"), b"").expect("go");
    let t = Instant::now();
    let mut reported: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for c in &mut children {
        let out = BufReader::new(c.stdout.take().expect("stdout"));
        for line in out.lines() {
            let line = line.expect("line");
            if let Some(rest) = line.find("GOT ").map(|at| &line[at + 4..]) {
                let f: Vec<&str> = rest.split(' ').collect();
                let prev = reported.insert(
                    f[0].to_owned(),
                    (f[1].parse().expect("uid"), f[2].parse().expect("gid")),
                );
                assert!(prev.is_none(), "pod {} reported twice", f[0]);
            }
        }
        let status = wait_with_timeout(c, Duration::from_secs(600));
        assert!(status.success(), "worker failed: {status}");
    }
    eprintln!(
        "{} allocations by {PROCS} processes in {:?}",
        reported.len(),
        t.elapsed()
    );
    assert_eq!(reported.len(), PROCS * PODS_PER_PROC);
    let a = common::allocator(dir.path(), SLOTS);
    let list = a.list().expect("list");
    assert_eq!(list.len(), PROCS * PODS_PER_PROC);
    common::assert_disjoint(&list);
    let mut seen_hosts: HashMap<u32, &str> = HashMap::new();
    for e in &list {
        let r = reported
            .get(&e.pod)
            .expect("every ledger entry was reported");
        assert_eq!(
            *r,
            (e.mapping.uid.host_id(), e.mapping.gid.host_id()),
            "pod {}",
            e.pod
        );
        assert!(
            seen_hosts.insert(r.0, &e.pod).is_none(),
            "host uid {} granted twice",
            r.0
        );
    }
}

#[test]
fn sigkill_while_holding_the_lock_leaves_a_usable_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), SLOTS);
    let before = a.allocate("before").expect("allocate");
    let mut holder = spawn_worker("hold", dir.path(), 0);
    let mut out = BufReader::new(holder.stdout.take().expect("stdout"));
    wait_for_line(&mut out, "LOCKED");

    // While the dead-to-be process holds the lock, allocation waits.
    let (tx, rx) = mpsc::channel::<Result<PodMapping, String>>();
    let dir_path = dir.path().to_owned();
    let waiter = std::thread::spawn(move || {
        let a = common::allocator(&dir_path, SLOTS);
        tx.send(a.allocate("after").map_err(|e| e.to_string()))
            .expect("send");
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "allocate did not wait for the lock holder"
    );
    holder.kill().expect("SIGKILL holder");
    let status = wait_with_timeout(&mut holder, Duration::from_secs(10));
    assert!(!status.success());
    let after = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("lock released by the kernel when its holder died")
        .expect("allocate after the holder died");
    waiter.join().expect("join");
    assert_ne!(after, before);
    let list = a.list().expect("ledger loads");
    assert_eq!(list.len(), 2);
    common::assert_disjoint(&list);
}

#[test]
fn sigkill_at_random_instants_never_corrupts_the_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = common::allocator(dir.path(), SLOTS);
    let mut workers: Vec<Child> = (0..2)
        .map(|i| spawn_worker("churn", dir.path(), i))
        .collect();
    for w in &mut workers {
        let mut out = BufReader::new(w.stdout.take().expect("stdout"));
        wait_for_line(&mut out, "READY");
    }
    let mut generations = Vec::new();
    for round in 0..40u64 {
        // Pseudo-random delays between 1 and 40 ms so kills land in every
        // phase: waiting, reading, writing the temp file, renaming.
        std::thread::sleep(Duration::from_millis(1 + (round * 17 + 5) % 40));
        let idx = usize::try_from(round % 2).expect("index");
        workers[idx].kill().expect("SIGKILL");
        wait_with_timeout(&mut workers[idx], Duration::from_secs(10));
        let list = a
            .list()
            .unwrap_or_else(|e| panic!("round {round}: ledger unusable: {e}"));
        common::assert_disjoint(&list);
        let ledger = Ledger::open(dir.path()).expect("ledger");
        let lock = ledger.lock(LockMode::Shared).expect("lock");
        generations.push(lock.load().expect("load").generation);
        drop(lock);
        let mut w = spawn_worker("churn", dir.path(), usize::try_from(round).expect("id") + 2);
        let mut out = BufReader::new(w.stdout.take().expect("stdout"));
        wait_for_line(&mut out, "READY");
        workers[idx] = w;
    }
    for w in &mut workers {
        w.kill().expect("SIGKILL");
        wait_with_timeout(w, Duration::from_secs(10));
    }
    assert!(
        generations.windows(2).all(|g| g[0] < g[1]),
        "workers made progress between kills: {generations:?}"
    );
    common::assert_disjoint(&a.list().expect("final list"));
    a.allocate("still-works").expect("allocate after the kills");
}
