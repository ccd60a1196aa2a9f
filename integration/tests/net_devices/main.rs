//! Secondary interfaces: OCI 1.3 `linux.netDevices` and the
//! `cnfbox.io/interfaces` annotation.
//!
//! The machine's real interfaces are never touched: every test makes a
//! throwaway network namespace that plays the host (its own bridge as the
//! trunk, veth pairs as the devices handed over) and runs `cnfbox` in it
//! with `nsenter --net` (`ip netns exec` would remount /sys and hide the
//! cgroups from the runtime).
//!
//! - `traffic`: pods talking over one trunk (macvlan, VLAN sub-interfaces);
//! - `moves`: a host device moved into a pod and given back;
//! - `refusals`: what `features` lists and what create refuses;
//! - `hostile`: two pods racing for a device, pod root planting an
//!   impostor, another host user against the network lock.

#[path = "../common/mod.rs"]
mod common;

mod hostile;
mod moves;
mod refusals;
mod traffic;
mod trunk;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{assert_nothing_left, assert_one_line_error, can_run, cnfbox_bin, Env};
use serde_json::json;
use test_bundles::{Bundle, Scenario};

/// A network namespace playing the host, deleted on drop.
struct HostNs {
    name: String,
    /// Short tag for device names (IFNAMSIZ is 16).
    tag: String,
}

impl HostNs {
    fn new(test: &str) -> Self {
        let tag = format!("{}", std::process::id() % 100_000);
        let name = format!("cnfbox-{test}-{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip(8) from iproute2");
        assert!(st.success(), "ip netns add {name}");
        let ns = Self { name, tag };
        // No IPv6 link-local addresses: they appear and lose their
        // `tentative` flag on their own and would make snapshots differ.
        ns.sh("ip link set lo up; for f in all default; do \
             echo 1 > /proc/sys/net/ipv6/conf/$f/disable_ipv6 2>/dev/null || true; done");
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs a shell script in the namespace; asserts it succeeds.
    fn sh(&self, script: &str) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .args(["sh", "-ec", script])
            .output()
            .expect("nsenter(1)");
        assert!(
            out.status.success(),
            "in {}: {script}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -o link` and `ip -o addr` without the counters that move on
    /// their own: what must be exactly as before after a refused create.
    fn snapshot(&self) -> String {
        self.sh("ip -o link; ip -o addr")
    }

    /// Link names in the namespace.
    fn links(&self) -> Vec<String> {
        self.sh("ip -o link")
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for HostNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `cnfbox` inside the host namespace, with the environment's config.
fn cnfbox(env: &Env, ns: &HostNs) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.path().display()))
        .arg(cnfbox_bin())
        .env("CNFBOX_CONFIG", env.config.as_ref().expect("env config"))
        .arg("--root")
        .arg(&env.root)
        .stdin(Stdio::null());
    cmd
}

fn run(env: &Env, ns: &HostNs, args: &[&str]) -> Output {
    cnfbox(env, ns).args(args).output().expect("spawn cnfbox")
}

fn ok(env: &Env, ns: &HostNs, args: &[&str]) -> String {
    let out = run(env, ns, args);
    assert!(
        out.status.success(),
        "cnfbox {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `create` without holding the init's stdio; returns the output's stderr.
fn create(env: &Env, ns: &HostNs, bundle: &Bundle, id: &str) -> Output {
    let err = env.tmp.path().join(format!("{id}.create.err"));
    let status = cnfbox(env, ns)
        .args(["create", "--bundle"])
        .arg(&bundle.dir)
        .arg(id)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .status()
        .expect("spawn cnfbox create");
    Output {
        status,
        stdout: Vec::new(),
        stderr: std::fs::read(&err).unwrap_or_default(),
    }
}

fn create_ok(env: &Env, ns: &HostNs, bundle: &Bundle, id: &str) {
    let out = create(env, ns, bundle, id);
    assert!(
        out.status.success(),
        "create {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Appends `text` to the environment's config.toml.
fn configure(env: &Env, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(env.config.as_ref().expect("env config"))
        .expect("open test config");
    f.write_all(text.as_bytes()).expect("write test config");
}

/// A sleeping pod with NET_ADMIN and the given annotation value.
fn pod_bundle(env: &Env, name: &str, interfaces: Option<&str>) -> Bundle {
    let interfaces = interfaces.map(str::to_string);
    env.bundle(name, move |b| {
        let b = b
            .scenario(&Scenario::Sleep)
            .annotation("cnfbox.io/capabilities", "NET_ADMIN");
        match interfaces {
            Some(v) => b.annotation("cnfbox.io/interfaces", v),
            None => b,
        }
    })
}

/// `linux.netDevices` entries `host -> name` added to a pod bundle.
fn with_net_devices(env: &Env, name: &str, devices: serde_json::Value) -> Bundle {
    env.bundle(name, move |b| {
        b.scenario(&Scenario::Sleep)
            .annotation("cnfbox.io/capabilities", "NET_ADMIN")
            .modify(move |s| {
                let mut d = serde_json::to_value(&*s).unwrap();
                d["linux"]["netDevices"] = devices;
                *s = serde_json::from_value(d).unwrap();
            })
    })
}

fn exec(env: &Env, ns: &HostNs, id: &str, script: &str) -> String {
    ok(env, ns, &["exec", id, "sh", "-c", script])
}

fn start(env: &Env, ns: &HostNs, id: &str) {
    ok(env, ns, &["start", id]);
}

/// The pin cnfbox keeps of container `id`'s pod network namespace.
fn pin_of(env: &Env, id: &str) -> PathBuf {
    let meta = common::record_of(&env.root, id);
    PathBuf::from(
        meta["network"]["pod_pin"]
            .as_str()
            .expect("pod_pin in the record"),
    )
}

/// The pin of container `id`'s relay namespace (its macvlan and VLAN
/// children).
fn relay_pin_of(env: &Env, id: &str) -> PathBuf {
    let meta = common::record_of(&env.root, id);
    PathBuf::from(
        meta["network"]["relay_pin"]
            .as_str()
            .expect("relay_pin in the record"),
    )
}

fn in_netns(path: &std::path::Path, script: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["sh", "-ec", script])
        .output()
        .expect("nsenter(1)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
