use super::*;

fn etc(subuid: &str, subgid: &str) -> (tempfile::TempDir, EtcRoot, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("subuid"), subuid).expect("write");
    std::fs::write(d.path().join("subgid"), subgid).expect("write");
    let e = EtcRoot::new(d.path());
    let cfg = e.default_config();
    (d, e, cfg)
}

#[test]
fn fresh_setup_avoids_others_and_is_idempotent() {
    let (_d, etc, cfg) = etc(
        "root:100000:65536\nalice:165536:65536",
        "root:100000:65536\n",
    );
    let opts = SetupOptions {
        pool_size: ID_BLOCK * 4,
        ..SetupOptions::default()
    };
    let r = setup(&etc, &cfg, &opts).expect("setup");
    assert_eq!(r.uid_pool, IdRange::new(262_144, 262_144).expect("r"));
    assert_eq!(r.gid_pool, r.uid_pool);
    assert_eq!(r.subuid, FileAction::Appended);
    assert_eq!(r.config, FileAction::Created);
    let subuid = std::fs::read_to_string(etc.subuid()).expect("read");
    // kubelet's pool is written right after cnfbox's, clear of both.
    assert_eq!(
        subuid,
        "root:100000:65536\nalice:165536:65536\ncnfbox:262144:262144\nkubelet:524288:7208960\n"
    );
    assert_eq!(r.kubelet_pool, IdRange::new(524_288, 7_208_960).expect("r"));
    assert!(!r.kubelet_user);
    assert!(std::fs::read_to_string(etc.subgid())
        .expect("read")
        .ends_with("cnfbox:262144:262144\nkubelet:524288:7208960\n"));
    let before = (subuid, std::fs::read_to_string(&cfg).expect("cfg"));
    let again = setup(&etc, &cfg, &opts).expect("setup again");
    assert_eq!(again.subuid, FileAction::Unchanged);
    assert_eq!(again.subgid, FileAction::Unchanged);
    assert_eq!(again.config, FileAction::Unchanged);
    assert_eq!(again.uid_pool, r.uid_pool);
    let after = (
        std::fs::read_to_string(etc.subuid()).expect("read"),
        std::fs::read_to_string(&cfg).expect("cfg"),
    );
    assert_eq!(before, after);
    let pools = Config::load_from(&cfg, true)
        .expect("cfg")
        .pools(&etc)
        .expect("pools");
    assert_eq!(pools.capacity(), 4);
}

#[test]
fn mismatch_is_reported() {
    let (_d, etc, cfg) = etc("cnfbox:1000000:65536\n", "cnfbox:1000000:65536\n");
    std::fs::create_dir_all(cfg.parent().expect("parent")).expect("mkdir");
    std::fs::write(&cfg, "[idmap]\npool = \"2000000:65536\"\n").expect("cfg");
    let err = setup(&etc, &cfg, &SetupOptions::default()).expect_err("mismatch");
    assert!(matches!(err, SetupError::Mismatch { .. }), "{err}");
}

#[test]
fn an_existing_kubelet_entry_is_kept_or_refused() {
    // kubelet already has a range: kept, and cnfbox's pool avoids it.
    let k = "kubelet:131072:655360\n";
    let etc_files = etc;
    let (_d, etc, cfg) = etc_files(k, k);
    std::fs::write(etc.passwd(), "kubelet:x:990:990::/:/sbin/nologin\n").expect("passwd");
    let r = setup(&etc, &cfg, &SetupOptions::default()).expect("setup");
    assert_eq!(r.kubelet_pool, IdRange::new(131_072, 655_360).expect("r"));
    assert!(r.kubelet_user);
    assert!(!r.uid_pool.overlaps(&r.kubelet_pool), "{r:?}");
    let subuid = std::fs::read_to_string(etc.subuid()).expect("read");
    assert_eq!(subuid.matches("kubelet:").count(), 1, "{subuid}");
    // Shapes kubelet cannot use, or that overlap cnfbox's pool.
    for (subuid, subgid, want) in [
        (
            "kubelet:131072:1000\n",
            "kubelet:131072:1000\n",
            "multiples of 65536",
        ),
        (
            "kubelet:131072:65536\nkubelet:262144:65536\n",
            "",
            "exactly one entry",
        ),
        (
            "kubelet:131072:65536\n",
            "kubelet:262144:65536\n",
            "same range",
        ),
        (
            "cnfbox:131072:655360\nkubelet:196608:65536\n",
            "",
            "kubelet:196608:65536",
        ),
    ] {
        let (_d2, etc2, cfg2) = etc_files(subuid, subgid);
        let err = setup(&etc2, &cfg2, &SetupOptions::default()).expect_err(want);
        assert!(
            err.to_string().contains(want),
            "{subuid:?}/{subgid:?}: {err}"
        );
        assert_eq!(
            std::fs::read_to_string(etc2.subuid()).expect("read"),
            subuid
        );
        assert!(!cfg2.exists(), "nothing written");
    }
}

#[test]
fn missing_files_are_created() {
    let d = tempfile::tempdir().expect("tempdir");
    let etc = EtcRoot::new(d.path());
    let r = setup(&etc, &etc.default_config(), &SetupOptions::default()).expect("setup");
    assert_eq!(r.uid_pool.start(), HOST_RESERVED_END);
    assert_eq!(r.subuid, FileAction::Created);
}
