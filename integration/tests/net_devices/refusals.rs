//! What `cnfbox features` lists and what create refuses: each refusal
//! names the device and the rule and changes nothing on the host.

use super::*;

#[test]
fn features_lists_net_devices() {
    let out = Command::new(cnfbox_bin())
        .arg("features")
        .output()
        .expect("spawn cnfbox");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["linux"]["netDevices"]["enabled"], true, "{v}");
}

#[test]
fn refusals_name_device_and_rule_and_change_nothing() {
    if !can_run("attachment refusals") {
        return;
    }
    let ns = HostNs::new("bad");
    let env = Env::new();
    let t = &ns.tag;
    let (vf, peer, mgmt, trunk) = (
        format!("vf{t}"),
        format!("pe{t}"),
        format!("mg{t}"),
        format!("tr{t}"),
    );
    ns.sh(&format!(
        "ip link add {vf} type veth peer name {peer}; ip addr add 10.215.0.1/24 dev {vf}; ip link set {vf} up; \
         ip link add {mgmt} type bridge; ip link add {trunk} type bridge; ip link set {trunk} up"
    ));
    // `lo` is an allowed parent only so that the kernel refuses a macvlan
    // on it midway (macvlan needs an Ethernet lower device): the undo path.
    configure(
        &env,
        "[network]\nmovable = [\"vf*\"]\nparents = [\"tr*\", \"lo\"]\nmax_attachments = 3\n",
    );

    // A pod holding vf: the "already attached" case, and its namespace must
    // not change either.
    let holder = env.id("holder");
    create_ok(
        &env,
        &ns,
        &pod_bundle(&env, "holder", Some(&format!("f0=move:{vf}"))),
        &holder,
    );
    let holder_pin = pin_of(&env, &holder);
    let holder_links = in_netns(&holder_pin, "ip -o link; ip -o addr");
    let before = ns.snapshot();

    let cases: Vec<(&str, Bundle, Vec<String>)> = vec![
        (
            "parent",
            pod_bundle(&env, "parent", Some(&format!("d0=macvlan:{mgmt}"))),
            vec![mgmt.clone(), "[network] parents".into(), "tr*".into()],
        ),
        (
            "notmovable",
            pod_bundle(&env, "notmovable", Some(&format!("f0=move:{mgmt}"))),
            vec![mgmt.clone(), "[network] movable".into()],
        ),
        (
            "missing",
            pod_bundle(&env, "missing", Some(&format!("f0=move:vfnone{t}"))),
            vec![format!("no host device vfnone{t}")],
        ),
        (
            "inuse",
            pod_bundle(
                &env,
                "inuse",
                Some(&format!("d0=macvlan:{trunk},f1=move:{vf}")),
            ),
            vec![vf.clone(), format!("already attached to pod {holder}")],
        ),
        (
            "clash",
            pod_bundle(
                &env,
                "clash",
                Some(&format!("d0=macvlan:{trunk},lo=macvlan:{trunk}")),
            ),
            vec!["already has an interface named lo".into()],
        ),
        (
            "duplicate",
            pod_bundle(
                &env,
                "duplicate",
                Some(&format!("d0=macvlan:{trunk},d0=macvlan:{trunk}:vepa")),
            ),
            vec!["interface name d0 is also asked for".into()],
        ),
        (
            "toomany",
            pod_bundle(
                &env,
                "toomany",
                Some(&format!(
                    "a=macvlan:{trunk},b=macvlan:{trunk},c=macvlan:{trunk},d=macvlan:{trunk}"
                )),
            ),
            vec!["4 interfaces".into(), "max_attachments = 3".into()],
        ),
        (
            "syntax",
            pod_bundle(&env, "syntax", Some("d0=tap:x")),
            vec![
                "unknown attachment kind \"tap\"".into(),
                "cnfbox.io/interfaces".into(),
            ],
        ),
        (
            "midway",
            pod_bundle(
                &env,
                "midway",
                Some(&format!("d0=macvlan:{trunk},x0=macvlan:lo")),
            ),
            vec!["create macvlan child of lo".into(), "x0=macvlan:lo".into()],
        ),
        (
            "hostnet",
            env.bundle("hostnet", {
                let trunk = trunk.clone();
                move |b| {
                    b.scenario(&Scenario::Sleep)
                        .annotation("cnfbox.io/interfaces", format!("d0=macvlan:{trunk}"))
                        .modify(|s| {
                            let mut d = serde_json::to_value(&*s).unwrap();
                            d["linux"]["namespaces"]
                                .as_array_mut()
                                .unwrap()
                                .retain(|n| n["type"] != "network");
                            *s = serde_json::from_value(d).unwrap();
                        })
                }
            }),
            vec!["no network namespace of its own".into()],
        ),
    ];
    for (name, bundle, needles) in cases {
        let id = env.id(name);
        let out = create(&env, &ns, &bundle, &id);
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let err = assert_one_line_error(&out, &needles);
        eprintln!("{name}: {err}");
        assert_nothing_left(&env, &id);
        assert_eq!(ns.snapshot(), before, "{name}: the host namespace changed");
        assert_eq!(
            in_netns(&holder_pin, "ip -o link; ip -o addr"),
            holder_links,
            "{name}: the other pod's namespace changed"
        );
    }

    // A move that succeeded is undone when a later step fails: vf goes
    // back with its address. (The holder gives it up first.)
    ok(&env, &ns, &["delete", "--force", &holder]);
    assert_nothing_left(&env, &holder);
    let before = ns.snapshot();
    let id = env.id("undo");
    let out = create(
        &env,
        &ns,
        &pod_bundle(&env, "undo", Some(&format!("f0=move:{vf},x0=macvlan:lo"))),
        &id,
    );
    assert_one_line_error(&out, &["create macvlan child of lo"]);
    assert_nothing_left(&env, &id);
    assert_eq!(
        ns.snapshot(),
        before,
        "the moved device came back as it was"
    );
}

#[test]
fn a_veth_whose_peer_goes_in_too_or_a_bridge_cannot_be_moved() {
    if !can_run("unverifiable moves") {
        return;
    }
    let ns = HostNs::new("unv");
    let env = Env::new();
    let t = &ns.tag;
    let (va, vb, br) = (format!("vfa{t}"), format!("vfb{t}"), format!("vfbr{t}"));
    ns.sh(&format!(
        "ip link add {va} type veth peer name {vb}; ip link add {br} type bridge"
    ));
    configure(&env, "[network]\nmovable = [\"vf*\"]\n");
    let before = ns.snapshot();
    for (name, value, dev) in [
        ("pair", format!("a=move:{va},b=move:{vb}"), va.clone()),
        ("bridge", format!("a=move:{br}"), br.clone()),
    ] {
        let id = env.id(name);
        let out = create(&env, &ns, &pod_bundle(&env, name, Some(&value)), &id);
        assert_one_line_error(&out, &[&dev, "cannot be moved", "could not tell it from"]);
        assert_nothing_left(&env, &id);
        assert_eq!(ns.snapshot(), before, "{name}");
    }
}

/// Replaces the `[network]` section of the environment's config.
fn set_network(env: &Env, section: &str) {
    let path = env.config.as_ref().expect("env config");
    let text = std::fs::read_to_string(path).expect("read test config");
    let keep = text.split("[network]").next().unwrap_or("").to_string();
    std::fs::write(path, format!("{keep}{section}")).expect("write test config");
}

#[test]
fn passthru_and_vlan_ids_need_the_parents_allowance() {
    if !can_run("parent settings") {
        return;
    }
    let ns = HostNs::new("pt");
    let env = Env::new();
    let trunk = format!("tr{}", ns.tag);
    ns.sh(&format!(
        "ip link add {trunk} type bridge; ip link set {trunk} up"
    ));
    let before = ns.snapshot();
    let cfg = env.config.clone().unwrap();
    let cfg = cfg.to_str().unwrap();

    // By default (a plain pattern): no passthru, no VLANs; refused before
    // any link is made, so this runs without 8021q too.
    set_network(&env, "[network]\nparents = [\"tr*\"]\n");
    let cases = [
        (
            "pt",
            format!("d0=macvlan:{trunk}:passthru"),
            "macvlan mode passthru",
            "passthru = true",
        ),
        (
            "vl",
            format!("v7=vlan:{trunk}:7"),
            "VLAN id 7",
            "vlans there: none",
        ),
    ];
    for (name, value, what, hint) in &cases {
        let id = env.id(name);
        let out = create(&env, &ns, &pod_bundle(&env, name, Some(value)), &id);
        let iface = value.split('=').next().unwrap();
        assert_one_line_error(
            &out,
            &[
                &format!("interface {iface}"),
                what,
                &format!("on parent {trunk}"),
                "[network] parents entry \"tr*\"",
                cfg,
                hint,
            ],
        );
        assert_nothing_left(&env, &id);
        assert_eq!(ns.snapshot(), before, "{name}");
    }

    // Allowed per parent: passthru works, VLAN ids outside the list do not.
    set_network(
        &env,
        "[network]\nparents = [{ name = \"tr*\", passthru = true, vlans = [\"100-199\"] }]\n",
    );
    let id = env.id("ptok");
    create_ok(
        &env,
        &ns,
        &pod_bundle(&env, "ptok", Some(&format!("d0=macvlan:{trunk}:passthru"))),
        &id,
    );
    let d = in_netns(&pin_of(&env, &id), "ip -d -o link show d0");
    assert!(d.contains("macvlan") && d.contains("mode passthru"), "{d}");
    ok(&env, &ns, &["delete", "--force", &id]);
    assert_nothing_left(&env, &id);
    assert_eq!(ns.snapshot(), before);

    let id = env.id("vl200");
    let out = create(
        &env,
        &ns,
        &pod_bundle(&env, "vl200", Some(&format!("v200=vlan:{trunk}:200"))),
        &id,
    );
    assert_one_line_error(
        &out,
        &[
            "interface v200",
            "VLAN id 200",
            &trunk,
            "vlans there: 100-199",
        ],
    );
    assert_nothing_left(&env, &id);
    assert_eq!(ns.snapshot(), before);
    // An id inside the list gets past the policy to the kernel.
    let id = env.id("vl150");
    let out = create(
        &env,
        &ns,
        &pod_bundle(&env, "vl150", Some(&format!("v150=vlan:{trunk}:150"))),
        &id,
    );
    if out.status.success() {
        ok(&env, &ns, &["delete", "--force", &id]);
    } else {
        let err = assert_one_line_error(&out, &["create VLAN sub-interface (8021q) of"]);
        eprintln!("SKIP an allowed VLAN id on this kernel (no 8021q): {err}");
    }
    assert_nothing_left(&env, &id);
    assert_eq!(ns.snapshot(), before);
}
