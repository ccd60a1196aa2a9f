//! The documentation's examples, run: a doc example that stops working
//! fails here (issue 30).
//!
//! Fenced blocks of `docs/*.md` say what they are in their info string:
//!
//! - ```` ```json example=NAME ````: spec fields, merged into a busybox
//!   bundle's `config.json` (objects key by key, top-level `mounts` added
//!   to the bundle's, any other value replaced) and run with `cnfbox run`
//!   under the `config.toml` of the same name, if any; it must exit 0 and
//!   leave nothing behind;
//! - ```` ```toml example=NAME ```` and ```` ```toml config ````: a
//!   `config.toml` (or part of one), parsed by cnfbox's own parser, which
//!   refuses unknown sections and keys, with `[idmap]` checked as `create`
//!   checks it;
//! - ```` ```yaml example=NAME ````: the Kubernetes Pod of that example: it
//!   names `runtimeClassName: cnfbox` and carries exactly the `cnfbox.io/*`
//!   annotations of the spec fields;
//! - ```` ```toml file=PATH ```` / ```` ```yaml file=PATH ````: a copy of a
//!   repository file, which must be the file as it is;
//! - ```` ```text help=CMD ```` (`docs/cli.md`): what `cnfbox CMD --help`
//!   prints (`ranges.list` for `cnfbox ranges list`).
//!
//! What the host must provide for an example is read from the example:
//! bind mount sources are made in the test's temporary directory; devices
//! named by `cnfbox.io/interfaces` or `linux.netDevices` are made in a
//! throwaway network namespace playing the host (a bridge for a parent, a
//! veth pair for a device moved in), in which `cnfbox` then runs; 2 MB
//! hugepages for `linux.resources.hugepageLimits` are reserved on the
//! example's node and given back. An example the host cannot run (no
//! 8021q, a device the kernel lacks, a CPU or node it does not have, no
//! hugepages to reserve) is skipped with a `SKIP` line naming why.
//!
//! `docs/configuration.md` is checked against the `Config` type through
//! its parser: the sections and keys it lists when it refuses an unknown
//! one must be exactly those the page's tables name.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{assert_nothing_left, can_run, cnfbox_bin, Env};
use serde_json::{json, Value};

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ is in the repository")
        .to_path_buf()
}

fn docs() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    assert!(!pages.is_empty(), "no pages in docs/");
    pages
}

/// Feature pages: each opens with an `## Example` section.
const FEATURE_PAGES: [&str; 7] = [
    "pods",
    "volumes",
    "capabilities",
    "numa-hugepages",
    "interfaces",
    "devices",
    "containerd",
];

/// A fenced block of a page.
#[derive(Debug, Clone)]
struct Block {
    page: PathBuf,
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    attrs: BTreeMap<String, String>,
    flags: BTreeSet<String>,
    text: String,
}

impl Block {
    fn at(&self) -> String {
        format!(
            "{}:{}",
            self.page
                .strip_prefix(repo())
                .unwrap_or(&self.page)
                .display(),
            self.line
        )
    }
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

/// The fenced blocks of markdown `text` (fences may be indented, as in a
/// list item; their lines lose that indent).
fn blocks_of(page: &Path, text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(Block, usize, Vec<String>)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let mut words = info.split_whitespace();
                    let lang = words.next().unwrap_or("").to_string();
                    let mut attrs = BTreeMap::new();
                    let mut flags = BTreeSet::new();
                    for w in words {
                        match w.split_once('=') {
                            Some((k, v)) => {
                                attrs.insert(k.to_string(), v.to_string());
                            }
                            None => {
                                flags.insert(w.to_string());
                            }
                        }
                    }
                    let block = Block {
                        page: page.to_path_buf(),
                        line: i + 1,
                        lang,
                        attrs,
                        flags,
                        text: String::new(),
                    };
                    open = Some((block, indent, Vec::new()));
                }
            }
            Some((block, indent, lines)) => {
                if trimmed == "```" {
                    block.text = lines.join("\n");
                    out.push(block.clone());
                    open = None;
                } else {
                    let strip = line
                        .char_indices()
                        .take_while(|(n, c)| *n < *indent && *c == ' ')
                        .count();
                    lines.push(line[strip..].to_string());
                }
            }
        }
    }
    assert!(
        open.is_none(),
        "{}: a fenced block is never closed",
        page.display()
    );
    out
}

fn all_blocks() -> Vec<Block> {
    docs()
        .iter()
        .flat_map(|p| blocks_of(p, &std::fs::read_to_string(p).expect("read page")))
        .collect()
}

/// `Config::parse` of `text` as if it were `/etc/cnfbox/config.toml`.
fn parse_config(text: &str) -> Result<cnfbox::config::Config, String> {
    cnfbox::config::Config::parse(Path::new("/etc/cnfbox/config.toml"), text)
        .map_err(|e| e.to_string())
}

/// Parses a config.toml as `create` does: the whole file by the runtime's
/// parser, then `[idmap]` by the idmap crate's checks.
fn check_config(text: &str) -> Result<(), String> {
    let cfg = parse_config(text)?;
    cfg.idmap(false).map(|_| ()).map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            let _ = write!(msg, ": {s}");
            src = s.source();
        }
        msg
    })
}

/// The page's `json example=NAME` blocks, by name.
fn spec_examples(blocks: &[Block]) -> BTreeMap<String, (Block, Value)> {
    let mut out = BTreeMap::new();
    for b in blocks.iter().filter(|b| b.lang == "json") {
        let Some(name) = b.attr("example") else {
            continue;
        };
        let value: Value = serde_json::from_str(&b.text)
            .unwrap_or_else(|e| panic!("{}: json example={name} is not JSON: {e}", b.at()));
        assert!(
            value.is_object(),
            "{}: json example={name} is not an object",
            b.at()
        );
        let prev = out.insert(name.to_string(), (b.clone(), value));
        assert!(prev.is_none(), "{}: a second json example={name}", b.at());
    }
    out
}

fn toml_examples(blocks: &[Block]) -> BTreeMap<String, Block> {
    let mut out = BTreeMap::new();
    for b in blocks.iter().filter(|b| b.lang == "toml") {
        if let Some(name) = b.attr("example") {
            let prev = out.insert(name.to_string(), b.clone());
            assert!(prev.is_none(), "{}: a second toml example={name}", b.at());
        }
    }
    out
}

// ---------------------------------------------------------------------
// config.toml blocks, Pod manifests, copies of repository files

#[test]
fn every_config_toml_block_parses() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for b in all_blocks().iter().filter(|b| b.lang == "toml") {
        if let Some(file) = b.attr("file") {
            if let Err(e) = same_as_file(&b.text, file) {
                failures.push(format!("{}: {e}", b.at()));
            }
            continue;
        }
        if b.attr("example").is_none() && !b.flags.contains("config") {
            failures.push(format!(
                "{}: a toml block must say what it is: `example=NAME` or `config` (cnfbox's \
                 config.toml, parsed here) or `file=PATH` (a copy of a repository file)",
                b.at()
            ));
            continue;
        }
        checked += 1;
        if let Err(e) = check_config(&b.text) {
            failures.push(format!("{}: {e}", b.at()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 7, "only {checked} config.toml blocks found");
}

fn same_as_file(text: &str, file: &str) -> Result<(), String> {
    let path = repo().join(file);
    let content = std::fs::read_to_string(&path).map_err(|e| format!("file={file}: read {e}"))?;
    if content.trim_end() != text.trim_end() {
        return Err(format!(
            "file={file}: the block is not the file as it is (copy {file} into it again)"
        ));
    }
    Ok(())
}

/// `cnfbox.io/*` annotations of a Pod manifest (`key: "value"` lines).
fn manifest_annotations(yaml: &str) -> BTreeMap<String, String> {
    yaml.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            k.starts_with("cnfbox.io/")
                .then(|| (k.to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

#[test]
fn pod_manifests_match_their_spec_fields() {
    let mut failures = Vec::new();
    let mut manifests = 0;
    for page in docs() {
        let blocks = blocks_of(&page, &std::fs::read_to_string(&page).unwrap());
        let specs = spec_examples(&blocks);
        for b in blocks.iter().filter(|b| b.lang == "yaml") {
            if let Some(file) = b.attr("file") {
                if let Err(e) = same_as_file(&b.text, file) {
                    failures.push(format!("{}: {e}", b.at()));
                }
                continue;
            }
            let Some(name) = b.attr("example") else {
                failures.push(format!(
                    "{}: a yaml block must be `example=NAME` (a Pod) or `file=PATH`",
                    b.at()
                ));
                continue;
            };
            manifests += 1;
            for needle in ["kind: Pod", "runtimeClassName: cnfbox"] {
                if !b.text.lines().any(|l| l.trim() == needle) {
                    failures.push(format!("{}: the Pod has no `{needle}`", b.at()));
                }
            }
            let Some((_, spec)) = specs.get(name) else {
                failures.push(format!(
                    "{}: no json example={name} on this page for the Pod",
                    b.at()
                ));
                continue;
            };
            let want: BTreeMap<String, String> = spec["annotations"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("cnfbox.io/"))
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let got = manifest_annotations(&b.text);
            if got != want {
                failures.push(format!(
                    "{}: the Pod's cnfbox.io annotations {got:?} are not the spec's {want:?}",
                    b.at()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(manifests >= 6, "only {manifests} Pod manifests found");
}

#[test]
fn each_feature_page_opens_with_its_example() {
    for name in FEATURE_PAGES {
        let page = repo().join("docs").join(format!("{name}.md"));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        let h2: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with("## "))
            .collect();
        let Some(&(start, first)) = h2.first() else {
            panic!("{name}.md has no sections");
        };
        assert_eq!(
            first, "## Example",
            "{name}.md: the first section is not the example"
        );
        let end = h2.get(1).map_or(usize::MAX, |(n, _)| *n);
        let examples = blocks_of(&page, &text)
            .into_iter()
            .filter(|b| b.line > start && b.line < end)
            .filter(|b| b.attr("example").is_some() || b.attr("file").is_some())
            .count();
        assert!(
            examples > 0,
            "{name}.md: its example section has no example"
        );
    }
    // An example's config.toml and spec fields are on one page.
    let blocks = all_blocks();
    let specs = spec_examples(&blocks);
    for (name, b) in toml_examples(&blocks) {
        if let Some((spec, _)) = specs.get(&name) {
            assert_eq!(
                spec.page,
                b.page,
                "{}: toml example={name} is not on the page of its spec fields",
                b.at()
            );
        }
    }
}

// ---------------------------------------------------------------------
// Running the spec examples

/// Objects merge key by key; the top-level `mounts` of `frag` are added
/// to `base`'s; any other value replaces.
fn merge(base: &mut Value, frag: &Value, top: bool) {
    match (base, frag) {
        (Value::Object(b), Value::Object(f)) => {
            for (k, v) in f {
                if top && k == "mounts" {
                    let list = b.entry(k.clone()).or_insert_with(|| json!([]));
                    list.as_array_mut()
                        .expect("bundle mounts are a list")
                        .extend(v.as_array().expect("example mounts are a list").clone());
                } else {
                    match b.get_mut(k) {
                        Some(old) if old.is_object() && v.is_object() => merge(old, v, false),
                        _ => {
                            b.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
        (b, f) => *b = f.clone(),
    }
}

/// What an example needs of the host, read from the example.
#[derive(Debug, Default)]
struct Needs {
    /// Parents (bridges) and devices to move in (veths), for a throwaway
    /// network namespace playing the host.
    parents: BTreeSet<String>,
    moved: BTreeSet<String>,
    vlan: bool,
    /// NUMA node, page size in kB, pages.
    hugepages: Vec<(u32, u64, u64)>,
}

enum Outcome {
    Ran,
    Skipped(String),
}

fn annotation<'a>(spec: &'a Value, key: &str) -> Option<&'a str> {
    spec["annotations"][key].as_str()
}

fn cpu_list(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u32, u32) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
        out.extend(a..=b);
    }
    out
}

fn page_size_kb(size: &str) -> Option<u64> {
    let (n, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    match unit {
        "KB" => Some(n),
        "MB" => Some(n * 1024),
        "GB" => Some(n * 1024 * 1024),
        _ => None,
    }
}

/// Reads what the example asks of the host; `Err` says why this host
/// cannot run it.
fn needs_of(spec: &Value) -> Result<Needs, String> {
    let mut needs = Needs::default();
    let node: u32 = annotation(spec, "cnfbox.io/numa-node")
        .map(|n| n.trim().parse().expect("numa-node annotation is a number"))
        .unwrap_or(0);
    let node_dir = PathBuf::from(format!("/sys/devices/system/node/node{node}"));
    if annotation(spec, "cnfbox.io/numa-node").is_some() && !node_dir.exists() {
        return Err(format!("this host has no NUMA node {node}"));
    }
    if let Some(cpus) = spec["linux"]["resources"]["cpu"]["cpus"].as_str() {
        let have = cpu_list(&std::fs::read_to_string(node_dir.join("cpulist")).unwrap_or_default());
        if let Some(cpu) = cpu_list(cpus).into_iter().find(|c| !have.contains(c)) {
            return Err(format!("this host has no CPU {cpu} on NUMA node {node}"));
        }
    }
    for limit in spec["linux"]["resources"]["hugepageLimits"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let size = limit["pageSize"].as_str().expect("pageSize");
        let kb = page_size_kb(size).unwrap_or_else(|| panic!("page size {size}"));
        let bytes = limit["limit"].as_u64().expect("limit");
        needs.hugepages.push((node, kb, bytes / (kb * 1024)));
    }
    for dev in spec["linux"]["devices"].as_array().into_iter().flatten() {
        let kind = match dev["type"].as_str() {
            Some("b") => "block",
            _ => "char",
        };
        let (major, minor) = (
            dev["major"].as_i64().unwrap(),
            dev["minor"].as_i64().unwrap(),
        );
        if !Path::new(&format!("/sys/dev/{kind}/{major}:{minor}")).exists() {
            return Err(format!(
                "this host's kernel has no device {major}:{minor} ({})",
                dev["path"].as_str().unwrap_or("?")
            ));
        }
    }
    if let Some(list) = annotation(spec, "cnfbox.io/interfaces") {
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (_, what) = entry.split_once('=').expect("NAME=KIND:...");
            let mut parts = what.split(':');
            match (parts.next(), parts.next()) {
                (Some("move"), Some(dev)) => {
                    needs.moved.insert(dev.to_string());
                }
                (Some("macvlan"), Some(parent)) => {
                    needs.parents.insert(parent.to_string());
                }
                (Some("vlan"), Some(parent)) => {
                    needs.parents.insert(parent.to_string());
                    needs.vlan = true;
                }
                other => panic!("interfaces entry {entry:?}: {other:?}"),
            }
        }
    }
    for dev in spec["linux"]["netDevices"]
        .as_object()
        .into_iter()
        .flatten()
    {
        needs.moved.insert(dev.0.clone());
    }
    Ok(needs)
}

/// A network namespace playing the host, deleted on drop.
struct HostNs {
    name: String,
}

impl HostNs {
    fn new(example: &str) -> Self {
        let name = format!("cnfbox-doc-{example}-{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip(8) from iproute2");
        assert!(st.success(), "ip netns add {name}");
        let ns = Self { name };
        ns.sh("ip link set lo up").expect("lo up");
        ns
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    fn sh(&self, script: &str) -> Result<String, String> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .args(["sh", "-ec", script])
            .output()
            .expect("nsenter(1)");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for HostNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// `nr_hugepages` of one size on one node raised for an example; put back
/// on drop.
struct Reservation {
    nr: PathBuf,
    before: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.nr, self.before.to_string());
    }
}

fn read_u64(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn reserve(node: u32, kb: u64, pages: u64) -> Result<Reservation, String> {
    let dir = PathBuf::from(format!(
        "/sys/devices/system/node/node{node}/hugepages/hugepages-{kb}kB"
    ));
    let nr = dir.join("nr_hugepages");
    let before = read_u64(&nr);
    let free = read_u64(&dir.join("free_hugepages"));
    std::fs::write(&nr, (before + pages).to_string())
        .map_err(|e| format!("cannot reserve {kb} kB hugepages on node {node}: {e}"))?;
    let r = Reservation { nr, before };
    if read_u64(&dir.join("free_hugepages")) < free + pages {
        return Err(format!(
            "the kernel could not reserve {pages} {kb} kB hugepages on node {node}"
        ));
    }
    Ok(r)
}

/// The example's config.toml with this environment's pool and ledger in
/// place of `[idmap] pool` and `ledger_dir`.
fn write_config(env: &Env, toml_text: Option<&str>) {
    let path = env.config.as_ref().expect("env has a config");
    let mut base: toml::Table = std::fs::read_to_string(path)
        .expect("env config")
        .parse()
        .expect("env config is TOML");
    let own = base["idmap"].as_table().expect("env [idmap]").clone();
    if let Some(text) = toml_text {
        let doc: toml::Table = text.parse().expect("example config.toml is TOML");
        for (k, v) in doc {
            base.insert(k, v);
        }
    }
    let idmap = base
        .entry("idmap")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("[idmap] is a table");
    idmap.remove("pool_start");
    idmap.remove("pool_size");
    for key in ["pool", "ledger_dir"] {
        idmap.insert(key.into(), own[key].clone());
    }
    let text = toml::to_string(&base).expect("serialize config");
    check_config(&text).expect("the test's config parses");
    std::fs::write(path, text).expect("write config");
}

/// Runs one spec example; `Err` is the failure to report.
fn run_example(name: &str, spec: &Value, toml_text: Option<&str>) -> Result<Outcome, String> {
    let needs = match needs_of(spec) {
        Ok(n) => n,
        Err(why) => return Ok(Outcome::Skipped(why)),
    };
    let _reserved = match needs
        .hugepages
        .iter()
        .map(|&(node, kb, pages)| reserve(node, kb, pages))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(r) => r,
        Err(why) => return Ok(Outcome::Skipped(why)),
    };
    let netns = if needs.parents.is_empty() && needs.moved.is_empty() {
        None
    } else {
        let ns = HostNs::new(name);
        for p in &needs.parents {
            ns.sh(&format!("ip link add {p} type bridge; ip link set {p} up"))
                .map_err(|e| format!("host bridge {p}: {e}"))?;
        }
        for (i, d) in needs.moved.iter().enumerate() {
            ns.sh(&format!(
                "ip link add {d} type veth peer name dpeer{i}; ip link set dpeer{i} up"
            ))
            .map_err(|e| format!("host veth {d}: {e}"))?;
        }
        if needs.vlan {
            let p = needs.parents.iter().next().expect("a parent");
            if let Err(e) = ns.sh(&format!(
                "ip link add link {p} name dprobe.7 type vlan id 7 && ip link del dprobe.7"
            )) {
                return Ok(Outcome::Skipped(format!(
                    "this kernel cannot make VLAN sub-interfaces (no 8021q; the VM lane has it): {e}"
                )));
            }
        }
        Some(ns)
    };

    let env = Env::new();
    write_config(&env, toml_text);
    let bundle = env.bundle(name, |b| b);
    let mut doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle.config_path).unwrap()).unwrap();
    let mut frag = spec.clone();
    let mounts = frag.get_mut("mounts").and_then(Value::as_array_mut);
    for m in mounts.into_iter().flatten() {
        let bind = m["type"] == "bind"
            || m["options"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"));
        if let (true, Some(src)) = (bind, m["source"].as_str()) {
            let local = env
                .tmp
                .path()
                .join("host")
                .join(src.trim_start_matches('/'));
            std::fs::create_dir_all(&local).unwrap();
            m["source"] = json!(local.display().to_string());
        }
    }
    merge(&mut doc, &frag, true);
    std::fs::write(
        &bundle.config_path,
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();

    let id = env.id(&format!("doc-{name}"));
    let mut cmd = match &netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.path())).arg(cnfbox_bin());
            c
        }
        None => Command::new(cnfbox_bin()),
    };
    let out: Output = cmd
        .env("CNFBOX_CONFIG", env.config.as_ref().unwrap())
        .arg("--root")
        .arg(&env.root)
        .args(["run", "--bundle"])
        .arg(&bundle.dir)
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .expect("spawn cnfbox run");
    if !out.status.success() {
        return Err(format!(
            "cnfbox run exited {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_nothing_left(&env, &id)
    }))
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "something was left behind".into())
    })?;
    Ok(Outcome::Ran)
}

#[test]
fn spec_examples_run() {
    if !can_run("doc examples") {
        return;
    }
    let blocks = all_blocks();
    let tomls = toml_examples(&blocks);
    let specs = spec_examples(&blocks);
    assert!(specs.len() >= 6, "only {} spec examples found", specs.len());
    let mut failures = Vec::new();
    let mut ran = 0;
    for (name, (block, spec)) in &specs {
        let toml_text = tomls.get(name).map(|b| b.text.as_str());
        match run_example(name, spec, toml_text) {
            Ok(Outcome::Ran) => {
                ran += 1;
                eprintln!("ran example {name} ({})", block.at());
            }
            Ok(Outcome::Skipped(why)) => {
                eprintln!("SKIP doc example {name} ({}): {why}", block.at())
            }
            Err(e) => failures.push(format!("example {name} ({}): {e}", block.at())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(ran > 0, "no example could run on this host");
}

/// The runner fails a broken example: an example whose process fails,
/// and a config.toml with a misspelt key.
#[test]
fn a_broken_example_fails() {
    assert!(check_config("[devices]\nalow = [\"c 10:232\"]\n").is_err());
    assert!(check_config("[idmap]\nrange_size = 1000\n").is_err());
    if !can_run("broken doc example") {
        return;
    }
    let failing = json!({ "process": { "args": ["sh", "-c", "exit 3"] } });
    assert!(run_example("broken", &failing, None).is_err());
    let refused = json!({ "annotations": { "cnfbox.io/capabilities": "SYS_MODULE" } });
    assert!(run_example("refused", &refused, None).is_err());
}

// ---------------------------------------------------------------------
// docs/configuration.md against the Config type

/// The names in the `(known: a, b)` of the parser's refusal of `text`.
fn known_names(text: &str) -> BTreeSet<String> {
    let err = parse_config(text).expect_err("the probe is refused");
    let start = err
        .rfind("(known: ")
        .unwrap_or_else(|| panic!("the parser's error lists no known names: {err}"))
        + "(known: ".len();
    let end = err[start..].find(')').expect("closing parenthesis") + start;
    // serde: "`a`", "`a` or `b`", "one of `a`, `b`, `c`".
    err[start..end]
        .replace(" or ", ", ")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A row of a key table: key, default cell, example cell.
#[derive(Debug)]
struct Row {
    key: String,
    default: String,
    example: String,
}

/// The text of `cell` when it is one code span and nothing else.
fn code(cell: &str) -> Option<&str> {
    let c = cell.trim().strip_prefix('`')?.strip_suffix('`')?;
    (!c.contains('`')).then_some(c)
}

/// `## [section]` headings and their tables' rows.
fn documented_keys(page: &str) -> BTreeMap<String, Vec<Row>> {
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in page.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_string);
            if let Some(s) = &section {
                out.entry(s.clone()).or_default();
            }
            continue;
        }
        let (Some(s), Some(row)) = (&section, line.strip_prefix("| `")) else {
            continue;
        };
        let row = format!("`{row}");
        let cells: Vec<&str> = row.split(" | ").map(str::trim).collect();
        assert!(cells.len() >= 4, "short row in [{s}]: {line}");
        out.get_mut(s).unwrap().push(Row {
            key: code(cells[0])
                .unwrap_or_else(|| panic!("[{s}]: key cell {}", cells[0]))
                .to_string(),
            default: cells[2].to_string(),
            example: cells[3].to_string(),
        });
    }
    out
}

fn configuration_page() -> String {
    std::fs::read_to_string(repo().join("docs/configuration.md")).expect("docs/configuration.md")
}

#[test]
fn configuration_reference_names_every_key_of_the_config_type() {
    let page = configuration_page();
    let documented = documented_keys(&page);
    let sections = known_names("[docprobe]\n");
    let doc_sections: BTreeSet<String> = documented.keys().cloned().collect();
    assert_eq!(
        doc_sections, sections,
        "docs/configuration.md's `## [section]` headings are not the sections of Config \
         (runtime/src/config.rs)"
    );
    let mut failures = Vec::new();
    for (section, rows) in &documented {
        let keys = known_names(&format!("[{section}]\ndocprobe = 1\n"));
        let doc: BTreeSet<String> = rows
            .iter()
            .filter(|r| !r.key.contains("[]."))
            .map(|r| r.key.clone())
            .collect();
        for k in keys.difference(&doc) {
            failures.push(format!(
                "[{section}] {k}: in the Config type, not in the page"
            ));
        }
        for k in doc.difference(&keys) {
            failures.push(format!(
                "[{section}] {k}: in the page, not in the Config type"
            ));
        }
        let bare = format!("[{section}]\n");
        for r in rows {
            let at = format!("[{section}] {}", r.key);
            // The example sets the key and parses on its own.
            let Some(example) = code(&r.example) else {
                failures.push(format!("{at}: the example cell is not one `key = value`"));
                continue;
            };
            let (top, sub) = match r.key.split_once("[].") {
                Some((t, s)) => (t, Some(s)),
                None => (r.key.as_str(), None),
            };
            if !example.starts_with(&format!("{top} = "))
                || sub.is_some_and(|s| !example.contains(&format!("{s} = ")))
            {
                failures.push(format!("{at}: the example `{example}` does not set it"));
            }
            if let Err(e) = parse_config(&format!("{bare}{example}")) {
                failures.push(format!("{at}: the example `{example}` is refused: {e}"));
            }
            // A default given as a value is the parser's.
            if let (None, Some(default)) = (sub, code(&r.default)) {
                let absent = parse_config(&bare).map(|c| format!("{c:?}"));
                let given =
                    parse_config(&format!("{bare}{top} = {default}")).map(|c| format!("{c:?}"));
                match (absent, given) {
                    (Ok(a), Ok(g)) if a == g => {}
                    (Ok(_), Ok(_)) => failures.push(format!(
                        "{at}: the default `{default}` is not the parser's (setting it gives \
                         another Config than leaving it out)"
                    )),
                    (Err(e), _) | (_, Err(e)) => {
                        failures.push(format!("{at}: the default `{default}` is refused: {e}"))
                    }
                }
            }
        }
    }
    // The page's complete example names every key.
    let full = blocks_of(Path::new("docs/configuration.md"), &page)
        .into_iter()
        .find(|b| b.attr("example") == Some("configuration"))
        .expect("docs/configuration.md has a toml example=configuration");
    for (section, rows) in &documented {
        assert!(
            full.text.contains(&format!("[{section}]")),
            "the complete example has no [{section}]"
        );
        for r in rows {
            let name = r.key.rsplit("[].").next().unwrap();
            if !full.text.contains(name) {
                failures.push(format!(
                    "[{section}] {}: not in the complete example",
                    r.key
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn configuration_reference_lists_every_annotation() {
    let page = configuration_page();
    let section = page
        .split("\n## Annotations\n")
        .nth(1)
        .expect("docs/configuration.md has an ## Annotations section");
    let section = section.split("\n## ").next().unwrap();
    let doc: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| l.split('`').next().unwrap().to_string())
        .collect();
    let keys: BTreeSet<String> = cnfbox_annotations::ALL
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(
        doc, keys,
        "docs/configuration.md's annotations are not cnfbox-annotations' ALL"
    );
}

/// `[network] parents` table entries are checked by the network policy
/// when a pod asks for an interface: a `cnfbox run` that asks for one
/// under an entry with an unknown key is refused with the keys there are.
#[test]
fn configuration_reference_names_every_parents_entry_key() {
    if !can_run("parents entry keys") {
        return;
    }
    let ns = HostNs::new("parents");
    let env = Env::new();
    write_config(
        &env,
        Some("[network]\nparents = [{ name = \"trunk0\", docprobe = 1 }]\n"),
    );
    let bundle = env.bundle("parents", |b| {
        b.annotation("cnfbox.io/interfaces", "d0=macvlan:trunk0")
    });
    let id = env.id("doc-parents");
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path()))
        .arg(cnfbox_bin())
        .env("CNFBOX_CONFIG", env.config.as_ref().unwrap())
        .arg("--root")
        .arg(&env.root)
        .args(["run", "--bundle"])
        .arg(&bundle.dir)
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .expect("spawn cnfbox run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unknown parents key was taken");
    let marker = "unknown key \"docprobe\" (";
    let start = err
        .find(marker)
        .unwrap_or_else(|| panic!("the refusal lists no keys: {err}"))
        + marker.len();
    let end = err[start..].find(')').unwrap() + start;
    let keys: BTreeSet<String> = err[start..end]
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    assert_nothing_left(&env, &id);
    let doc: BTreeSet<String> = documented_keys(&configuration_page())["network"]
        .iter()
        .filter_map(|r| r.key.strip_prefix("parents[].").map(str::to_string))
        .collect();
    assert_eq!(
        doc, keys,
        "docs/configuration.md's parents[] keys are not the network policy's"
    );
}

// ---------------------------------------------------------------------
// docs/cli.md and links

/// `cnfbox ARGS --help`.
fn help(args: &[&str]) -> String {
    let out = Command::new(cnfbox_bin())
        .args(args)
        .arg("--help")
        .output()
        .expect("spawn cnfbox --help");
    assert!(out.status.success(), "cnfbox {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subcommands a `--help` lists under `Commands:`, but `help`.
fn commands(help: &str) -> Vec<String> {
    help.split("Commands:\n")
        .nth(1)
        .unwrap_or("")
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn cli_reference_is_what_help_prints() {
    let page = repo().join("docs/cli.md");
    let blocks: BTreeMap<String, Block> =
        blocks_of(&page, &std::fs::read_to_string(&page).expect("docs/cli.md"))
            .into_iter()
            .filter_map(|b| Some((b.attr("help")?.to_string(), b)))
            .collect();
    let mut want = vec![String::new()];
    for c in commands(&help(&[])) {
        for s in commands(&help(&[&c])) {
            want.push(format!("{c}.{s}"));
        }
        want.push(c);
    }
    let mut failures = Vec::new();
    for key in &want {
        let Some(b) = blocks.get(key) else {
            failures.push(format!("docs/cli.md has no `text help={key}` block"));
            continue;
        };
        let args: Vec<&str> = key.split('.').filter(|s| !s.is_empty()).collect();
        if help(&args).trim_end() != b.text.trim_end() {
            let cmd: Vec<&str> = std::iter::once("cnfbox")
                .chain(args.iter().copied())
                .chain(["--help"])
                .collect();
            failures.push(format!(
                "{}: not what `{}` prints (paste its output into the block)",
                b.at(),
                cmd.join(" ")
            ));
        }
    }
    for key in blocks.keys().filter(|k| !want.contains(k)) {
        failures.push(format!("docs/cli.md: help={key} is no command"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of the headings of markdown `text` (outside code).
fn anchors(text: &str) -> BTreeSet<String> {
    let code = code_lines(text);
    text.lines()
        .enumerate()
        .filter(|(i, l)| !code.contains(i) && l.starts_with('#'))
        .filter_map(|(_, l)| l.trim_start_matches('#').strip_prefix(' '))
        .map(slug)
        .collect()
}

/// 0-based lines inside fenced blocks (fences included).
fn code_lines(text: &str) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut inside = false;
    for (i, l) in text.lines().enumerate() {
        let fence = l.trim_start().starts_with("```");
        if inside || fence {
            out.insert(i);
        }
        if fence {
            inside = !inside;
        }
    }
    out
}

/// Link targets of markdown `text` outside code.
fn links(text: &str) -> Vec<(usize, String)> {
    let code = code_lines(text);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if code.contains(&i) {
            continue;
        }
        // Inline code spans hold no links.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(n, _)| n % 2 == 0)
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((i + 1, after[..end].to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn links_resolve() {
    let mut pages = docs();
    pages.push(repo().join("README.md"));
    let mut failures = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let dest = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            let at = format!("{}:{line}: {target}", page.display());
            if !dest.exists() {
                failures.push(format!("{at}: no such file"));
                continue;
            }
            if let Some(a) = anchor {
                let dest_text = std::fs::read_to_string(&dest).unwrap_or_default();
                if !anchors(&dest_text).contains(a) {
                    failures.push(format!("{at}: no heading #{a} there"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 20, "only {checked} links found");
}
