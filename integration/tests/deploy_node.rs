//! `deploy/install-node.sh` on the containerd under test (2.x): the
//! installed config, read back by that containerd (`config dump`), holds
//! the `cnfbox` handler of each configuration, and containerd starts on it
//! with its CRI runtime plugin loaded. A wrong configuration name is one
//! line and installs nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{can_run, cnfbox_bin};
use test_bundles::containerd::{find_tool, search_path, unsupported_for_cnfbox_shim};

const CRI_RUNTIME: &str = "io.containerd.cri.v1.runtime";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

fn containerd() -> Option<PathBuf> {
    let test = "deploy_node";
    if !can_run(test) {
        return None;
    }
    if let Some(why) = unsupported_for_cnfbox_shim() {
        eprintln!("SKIP {test}: {why}");
        return None;
    }
    find_tool("containerd")
}

fn install(root: &Path, conf: &str, containerd: &Path) -> Output {
    let bin_dir = cnfbox_bin().parent().expect("bin dir").to_path_buf();
    Command::new("bash")
        .arg(repo().join("deploy/install-node.sh"))
        .arg(conf)
        .env("CNFBOX_INSTALL_ROOT", root)
        .env("CNFBOX_BIN_DIR", bin_dir)
        .env("CONTAINERD", containerd)
        .env("PATH", search_path())
        .output()
        .expect("run install-node.sh")
}

/// The merged, migrated config containerd loads from `config`.
fn dump(containerd: &Path, config: &Path) -> toml::Table {
    let out = Command::new(containerd)
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .expect("containerd config dump");
    assert!(
        out.status.success(),
        "config dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .parse()
        .expect("config dump is TOML")
}

fn handler(dump: &toml::Table) -> &toml::Table {
    dump["plugins"][CRI_RUNTIME]["containerd"]["runtimes"]["cnfbox"]
        .as_table()
        .unwrap_or_else(|| panic!("no cnfbox handler in {CRI_RUNTIME}: {dump:#?}"))
}

/// containerd on `config`, with its root, state and sockets in `dir`.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(containerd: &Path, config: &Path, dir: &Path) -> (Daemon, PathBuf) {
    let sock = dir.join("containerd.sock");
    let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
    let child = Command::new(containerd)
        .arg("--config")
        .arg(config)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--address")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start containerd");
    let daemon = Daemon(child);
    // Readiness, not a timing check: containerd is up once it serves.
    for _ in 0..300 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (daemon, sock)
}

/// The `ctr plugins ls` line of plugin `typ`/`id`.
fn plugin_line<'a>(list: &'a str, typ: &str, id: &str) -> Option<&'a str> {
    list.lines().find(|l| {
        let mut f = l.split_whitespace();
        f.next() == Some(typ) && f.next() == Some(id)
    })
}

fn plugins(sock: &Path) -> String {
    let ctr = find_tool("ctr").expect("ctr");
    let mut last = String::new();
    for _ in 0..100 {
        let out = Command::new(&ctr)
            .arg("--address")
            .arg(sock)
            .args(["plugins", "ls"])
            .output()
            .expect("ctr plugins ls");
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && plugin_line(&last, "io.containerd.cri.v1", "runtime").is_some() {
            return last;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    last
}

#[test]
fn installed_config_holds_the_handler_and_containerd_starts_on_it() {
    let Some(containerd) = containerd() else {
        return;
    };
    for (conf, runtime_type) in [
        ("cnfbox-v2", "io.containerd.cnfbox.v2"),
        ("runc-v2", "io.containerd.runc.v2"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("node");
        let out = install(&root, conf, &containerd);
        assert!(
            out.status.success(),
            "{conf}: install-node.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shim = root.join("usr/local/bin/containerd-shim-cnfbox-v2");
        assert!(shim.exists(), "{conf}: no {}", shim.display());
        let config = root.join("etc/containerd/config.toml");
        let d = dump(&containerd, &config);
        let h = handler(&d);
        assert_eq!(
            h["runtime_type"].as_str(),
            Some(runtime_type),
            "{conf}: {h:#?}"
        );
        assert_eq!(
            h["pod_annotations"].as_array().map(Vec::len),
            Some(1),
            "{conf}: {h:#?}"
        );
        if conf == "runc-v2" {
            assert_eq!(
                h["runtime_path"].as_str(),
                Some(shim.to_str().expect("utf-8")),
                "{conf}: {h:#?}"
            );
            assert_eq!(
                h["options"]["BinaryName"].as_str(),
                Some("cnfbox"),
                "{conf}"
            );
        }
        // Installing again changes nothing (no second import line).
        let again = install(&root, conf, &containerd);
        assert!(again.status.success(), "{conf}: second install failed");
        let text = std::fs::read_to_string(&config).expect("config");
        assert_eq!(
            text.matches("conf.d/*.toml").count(),
            1,
            "{conf}: one import of the drop-ins: {text}"
        );

        let run = dir.path().join("run");
        std::fs::create_dir(&run).expect("run dir");
        let (_daemon, sock) = start(&containerd, &config, &run);
        let list = plugins(&sock);
        for (typ, id) in [
            ("io.containerd.cri.v1", "runtime"),
            ("io.containerd.grpc.v1", "cri"),
        ] {
            let line = plugin_line(&list, typ, id).unwrap_or_else(|| {
                let log = std::fs::read_to_string(run.join("containerd.log")).unwrap_or_default();
                panic!("{conf}: no {typ} {id} plugin listed: {list}\nlog:\n{log}")
            });
            assert!(line.trim_end().ends_with("ok"), "{conf}: {line}");
        }
    }
}

#[test]
fn an_unknown_configuration_is_one_line_and_installs_nothing() {
    let Some(containerd) = containerd() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("node");
    let out = install(&root, "runc-v3", &containerd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted runc-v3");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("runc-v3"), "{err}");
    assert!(!root.exists(), "created {}", root.display());
}
