use super::*;

const PATH: &str = "/etc/cnfbox/config.toml";

fn refused(text: &str) -> String {
    let err = Config::parse(Path::new(PATH), text).expect_err(text);
    let line = err.to_string();
    assert!(!line.contains('\n'), "{line}");
    line
}

/// Every section with every key, as the README documents them.
const FULL: &str = r#"
[idmap]
pool = "1000000:655360"
range_size = 65536
ledger_dir = "/var/lib/cnfbox/idmap"
allow_host_userns = false
mode = "kubelet"

[numa]
reserved_cpus = "0-1"

[capabilities]
allow = ["NET_ADMIN", "CAP_NET_RAW"]

[network]
movable = ["vf*"]
parents = [
    "trunk0",
    { name = "tr*", passthru = true, vlans = [100, "200-299"] },
]
max_attachments = 4

[devices]
allow = ["c 10:232", "b 259:*"]

[pods]
host_namespaces = "host-userns"
"#;

#[test]
fn a_full_config_is_accepted() {
    let c = Config::parse(Path::new(PATH), FULL).unwrap();
    assert_eq!(c.idmap.mode, idmap::IdmapMode::Kubelet);
    assert_eq!(c.numa.reserved_cpus, "0-1");
    assert_eq!(c.capabilities.as_ref().unwrap().allow.len(), 2);
    assert_eq!(c.network.movable, ["vf*"]);
    assert_eq!(c.network.max_attachments, Some(4));
    assert_eq!(c.line_of(c.network.parents[1].span().start), 19);
    assert_eq!(c.devices.as_ref().unwrap().allow.len(), 2);
    assert_eq!(c.pods.host_namespaces, HostNamespaces::HostUserns);
    assert!(c.found);
    let pools = c.idmap(true).unwrap().configured_pool().unwrap().unwrap();
    assert_eq!(pools.start(), 1_000_000);
    // Empty and missing files mean the defaults.
    let c = Config::parse(Path::new(PATH), "").unwrap();
    assert!(c.capabilities.is_none() && c.devices.is_none());
    let c = Config::read(Path::new("/nonexistent/cnfbox.toml")).unwrap();
    assert!(!c.found);
    assert!(c.idmap(false).unwrap().configured_pool().unwrap().is_none());
    assert!(c.idmap(true).is_err());
}

#[test]
fn an_unknown_section_is_refused_with_its_line() {
    let err = refused("[idmap]\npool = \"1000000:65536\"\n\n[netwrok]\nmovable = []\n");
    assert_eq!(
        err,
        "/etc/cnfbox/config.toml:4: unknown section [netwrok] \
         (known: idmap, numa, capabilities, network, devices, pods)"
    );
    let err = refused("pool = \"1000000:65536\"\n");
    assert!(
        err.starts_with("/etc/cnfbox/config.toml:1: unknown key `pool` outside any section"),
        "{err}"
    );
}

#[test]
fn an_unknown_key_is_refused_in_every_section() {
    for (section, key, known) in [
        ("idmap", "poool", "pool, pool_start"),
        ("numa", "reserved", "reserved_cpus"),
        ("capabilities", "alow", "allow"),
        ("network", "moveable", "movable, parents, max_attachments"),
        ("devices", "alow", "allow"),
        ("pods", "host_namespace", "host_namespaces"),
    ] {
        let err = refused(&format!("# cnfbox\n[{section}]\n{key} = []\n"));
        let want = format!("{PATH}:3: unknown field `{key}` in [{section}] (known: {known}");
        assert!(err.starts_with(&want), "{err}\nwant {want}");
    }
}

#[test]
fn a_wrong_type_is_refused_with_its_key() {
    for (text, line, want) in [
        (
            "[network]\n\nmax_attachments = \"4\"\n",
            3,
            "[network] max_attachments: invalid type",
        ),
        (
            "[devices]\nallow = [1]\n",
            2,
            "[devices] allow.[0]: invalid type: integer",
        ),
        (
            "[idmap]\nrange_size = -1\n",
            2,
            "[idmap] range_size: invalid value",
        ),
        (
            "[pods]\nhost_namespaces = \"yes\"\n",
            2,
            "[pods] host_namespaces: unknown variant `yes`",
        ),
        ("numa = 1\n", 1, "[numa]: invalid type: integer"),
        ("[devices]\n", 1, "[devices]: missing field `allow`"),
        ("[numa\n", 1, ""),
    ] {
        let err = refused(text);
        let prefix = format!("{PATH}:{line}: ");
        assert!(
            err.starts_with(&prefix) && err.contains(want),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn a_path_is_parsed_once_per_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[numa]\nreserved_cpus = \"0\"\n").unwrap();
    let first = load(&path).unwrap();
    // Changed or removed after the first read: the command keeps the
    // version it read, and a bad file its error.
    std::fs::write(&path, "[netwrok]\n").unwrap();
    assert!(Arc::ptr_eq(&first, &load(&path).unwrap()));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[netwrok]\n").unwrap();
    let err = load(&bad).unwrap_err().to_string();
    std::fs::write(&bad, "").unwrap();
    assert_eq!(load(&bad).unwrap_err().to_string(), err);
}

#[test]
fn the_config_setup_writes_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["subuid", "subgid"] {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    let etc = idmap::EtcRoot::new(dir.path());
    let path = etc.default_config();
    let opts = idmap::SetupOptions {
        ledger_dir: dir.path().join("ledger"),
        ..idmap::SetupOptions::default()
    };
    idmap::setup(&etc, &path, &opts).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let c = Config::parse(&path, &text).unwrap();
    assert!(c.idmap(true).unwrap().configured_pool().unwrap().is_some());
}
