//! `create` and `run`.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use liboci_cli::{Create, Run};

use super::{check_console, check_id, console_socket_path, container_dir, wait, Ctx};
use crate::bundle::{self, Bundle};
use crate::bundle_alias::BundleAlias;
use crate::capabilities;
use crate::cgroups;
use crate::failpoint;
use crate::hugepages;
use crate::meta::{ContainerMeta, STAGED_BUNDLE};
use crate::profile;

/// Directory under the state root where specs are staged during `create`.
pub const STAGING: &str = ".staging";

/// Everything `create` and `run` share.
pub struct CreateOpts<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    pub detach: bool,
}

pub fn create_cmd(ctx: &Ctx, a: &Create) -> anyhow::Result<()> {
    create(
        ctx,
        &CreateOpts {
            id: &a.container_id,
            bundle: &a.bundle,
            pid_file: a.pid_file.as_deref(),
            console_socket: a.console_socket.as_deref(),
            preserve_fds: a.preserve_fds,
            no_pivot: a.no_pivot,
            detach: true,
        },
    )
    .map(|_| ())
}

pub fn run_cmd(ctx: &Ctx, a: &Run) -> anyhow::Result<u8> {
    let (mut container, meta) = create(
        ctx,
        &CreateOpts {
            id: &a.container_id,
            bundle: &a.bundle,
            pid_file: a.pid_file.as_deref(),
            console_socket: a.console_socket.as_deref(),
            preserve_fds: a.preserve_fds,
            no_pivot: a.no_pivot,
            detach: a.detach,
        },
    )?;
    let pid = container
        .pid()
        .context("created container has no init pid")?;
    // Signals are blocked only now, after the init was cloned, so the
    // container's mask is untouched; runc forwards them the same way.
    let signals = wait::block_forwarded_signals()?;
    if let Err(err) = container.start() {
        let _ = give_back(&meta, true);
        let _ = super::delete_container(&mut container, true);
        let _ = profile::teardown(&ctx.root, &meta);
        return Err(err).context(format!("start container {}", a.container_id));
    }
    if a.detach {
        return Ok(0);
    }
    let code = wait::forward_until_exit(pid, &signals)?;
    if !a.keep {
        give_back(&meta, false)?;
        let warning = super::delete_container(&mut container, true)
            .with_context(|| format!("delete container {} after exit", a.container_id))?;
        profile::teardown(&ctx.root, &meta)?;
        super::warn(warning);
    }
    Ok(code)
}

/// Creates a container; on any failure nothing is left behind.
pub fn create(ctx: &Ctx, o: &CreateOpts<'_>) -> anyhow::Result<(Container, ContainerMeta)> {
    check_id(o.id)?;
    // The whole config.toml, parsed (and cached for every feature below)
    // before anything exists: an unknown section or key stops here.
    crate::config::current().with_context(|| format!("create container {}", o.id))?;
    let dir = container_dir(ctx, o.id);
    if dir.exists() {
        bail!(
            "container {} already exists (state in {})",
            o.id,
            dir.display()
        );
    }
    let bundle = Bundle::load(o.bundle)?;
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    check_console(terminal, "process.terminal", o.detach, o.console_socket)?;
    let driver = cgroups::driver(ctx.systemd, Path::new("/"))?;
    let setup = cgroups::setup()?;
    let spec_cgroup = bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone());
    let cgroup_path = cgroups::resolve(spec_cgroup.as_deref(), o.id, driver, setup)?;

    let mut spec = bundle.spec.clone();
    if let Some(root) = spec.root_mut() {
        root.set_path(bundle.rootfs.clone());
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(cgroup_path.clone()));
    }
    // `noNewPrivileges: false` means what an absent field means, but
    // libcontainer 0.7 takes any present value for "set" and then loads the
    // seccomp filter after the capabilities are dropped, which the kernel
    // refuses without CAP_SYS_ADMIN ("failed to load seccomp context").
    if let Some(process) = spec.process_mut() {
        if process.no_new_privileges() == Some(false) {
            process.set_no_new_privileges(None);
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&ctx.root)
        .with_context(|| format!("create state root {}", ctx.root.display()))?;
    // NUMA placement and hugepage checks first: bad input fails before any
    // range, cgroup or mount exists.
    let numa = crate::numa::apply(
        &mut spec,
        Path::new("/sys"),
        &idmap::EtcRoot::default().config_path(),
    )
    .with_context(|| format!("create container {}", o.id))?;
    let hugepage_plan = hugepages::check(
        &mut spec,
        &hugepages::Roots::default(),
        numa.as_ref().map(|r| r.node),
    )
    .with_context(|| format!("create container {}", o.id))?;
    // Secondary interfaces are checked against the spec and the policy
    // before any range or mount; libcontainer never sees netDevices.
    let interfaces = crate::net::plan(o.id, &spec, &idmap::EtcRoot::default().config_path())
        .with_context(|| format!("create container {}", o.id))?;
    crate::net::strip(&mut spec);
    crate::devices::rules::deny_by_default(&mut spec);
    failpoint::hit("create:before-range");
    let applied = profile::apply(&ctx.root, o.id, &mut spec, &bundle.rootfs)
        .with_context(|| format!("create container {}", o.id))?;
    let hugepages = if hugepage_plan.is_empty() {
        None
    } else {
        let made = profile::mount_dir(&ctx.root, "hugepages")
            .map_err(anyhow::Error::from)
            .and_then(|dir| {
                hugepages::setup(
                    hugepage_plan,
                    &mut spec,
                    &cgroup_path,
                    &dir.join(o.id),
                    applied.mapping.as_ref(),
                )
                .map_err(anyhow::Error::from)
            });
        match made {
            Ok(r) => {
                failpoint::hit("create:after-hugepages");
                Some(r)
            }
            Err(err) => {
                profile::undo(&applied);
                return Err(err).with_context(|| format!("create container {}", o.id));
            }
        }
    };
    // Device nodes: made on the host after the mapping is known (their
    // owners are the pod's host ids). The tmpfs at its fixed path
    // (`<mount base>/devices/<id>`) is the journal a killed create leaves
    // for `delete --force`; a failed one is undone here.
    let devices = crate::devices::setup(
        &ctx.root,
        o.id,
        &mut spec,
        applied.mapping.as_ref(),
        &idmap::EtcRoot::default().config_path(),
    );
    let devices = match devices {
        Ok(d) => {
            if d.is_some() {
                failpoint::hit("create:after-devices");
            }
            d
        }
        Err(err) => {
            if let Some(h) = &hugepages {
                if let Err(err) = h.teardown() {
                    tracing::warn!(%err, "remove hugepages after failed create");
                }
            }
            profile::undo(&applied);
            return Err(err).with_context(|| format!("create container {}", o.id));
        }
    };
    let undo = || {
        if let Some(d) = &devices {
            crate::devices::detach(&d.dir);
        }
        if let Some(h) = &hugepages {
            if let Err(err) = h.teardown() {
                tracing::warn!(%err, "remove hugepages after failed create");
            }
        }
        profile::undo(&applied);
    };
    let config = idmap::EtcRoot::default().config_path();
    let private_userns = applied.mapping.is_some();
    let bound = !crate::host_ns::unbounded_caps(&spec, private_userns, &config);
    let caps = capabilities::Policy::load(&config)
        .and_then(|policy| policy.apply_with(&mut spec, private_userns, bound))
        .map_err(anyhow::Error::from)
        .and_then(|()| match &applied.mapping {
            Some(m) => crate::sysctl::fit_to_mapping(&mut spec, &m.gid).map_err(Into::into),
            None => Ok(()),
        })
        .and_then(|()| {
            crate::hooks::relay_through_cnfbox(&mut spec, &bundle.dir).map_err(Into::into)
        });
    if let Err(err) = caps {
        undo();
        return Err(err).with_context(|| format!("create container {}", o.id));
    }
    let stage = ctx
        .root
        .join(STAGING)
        .join(format!("{}.{}", o.id, std::process::id()));
    if let Err(err) = bundle::write_staged(&stage, &spec) {
        // A full disk fails the write after the directory was made.
        let _ = fs::remove_dir_all(&stage);
        undo();
        return Err(err.into());
    }
    failpoint::hit("create:after-stage");

    let mut meta = ContainerMeta {
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        cgroup_path: cgroup_path.clone(),
        systemd: driver == cgroups::Driver::Systemd,
        pod: Some(applied.pod.clone()),
        mapping: applied.mapping,
        sandbox: applied.sandbox,
        rootfs_view: applied.rootfs_view.clone(),
        volume_views: applied.volume_views.clone(),
        numa,
        hugepages: hugepages.clone(),
        network: None,
        devices: devices.clone(),
    };
    // libcontainer records the path it loads the spec from as the bundle
    // that the in-container hooks see: give it the alias (see
    // `bundle_alias`), which names the user's bundle.
    let alias = staged_alias(&bundle.dir, &spec);
    let spec_dir = alias
        .as_ref()
        .map_or_else(|| stage.clone(), BundleAlias::path);
    let built = build(ctx, o, &spec_dir, driver);
    drop(alias);
    if let Some(pin) = &applied.pinned {
        crate::host::unpin(pin);
    }
    if built.is_ok() {
        failpoint::hit("create:after-init");
    }
    let result = built.and_then(|mut c| {
        if let Err(err) = harden_views(&spec, &meta)
            .and_then(|()| join_hugetlb(&c, &meta))
            .and_then(|()| restore_memlock(&c, &spec))
            .and_then(|()| adopt_netns(&c, applied.adopted_netns.as_deref(), o.id))
        {
            let _ = super::delete_container(&mut c, true);
            return Err(err);
        }
        if !interfaces.is_empty() {
            match attach_interfaces(ctx, o.id, &c, &dir, &meta, &interfaces) {
                Ok(net) => meta.network = Some(net),
                Err(err) => {
                    let _ = super::delete_container(&mut c, true);
                    return Err(err);
                }
            }
        }
        finish(&mut c, &dir, &stage, &meta).inspect_err(|_| {
            let _ = give_back(&meta, true);
            let _ = super::delete_container(&mut c, true);
        })?;
        Ok(c)
    });
    if let Err(err) = &result {
        let _ = fs::remove_dir_all(&stage);
        // A concurrent create of the same id won the race: its state is
        // not ours to remove.
        if !is_exist(err) {
            cleanup_failed(&dir, &meta, o.id);
        }
        undo();
    }
    if result.is_ok() {
        failpoint::hit("create:after-state");
    }
    result.map(|c| (c, meta))
}

/// Attaches the pod's interfaces to the created container's network
/// namespace, recording them in its metadata first so that a crash midway
/// leaves something `delete --force` can undo.
fn attach_interfaces(
    ctx: &Ctx,
    id: &str,
    c: &Container,
    dir: &Path,
    meta: &ContainerMeta,
    interfaces: &[crate::net::Request],
) -> anyhow::Result<crate::net::PodNetwork> {
    let pid = c.pid().context("created container has no init pid")?;
    let pins = crate::views::pins_dir(&ctx.root)?;
    crate::net::attach(&ctx.root, &pins, id, pid.as_raw(), interfaces, |net| {
        let mut m = meta.clone();
        m.network = Some(net.clone());
        m.save(dir).map_err(Into::into)
    })
    .with_context(|| format!("create container {id}"))
}

/// Gives a pod's interfaces back to the host before its sandbox goes; with
/// `force` a failure is logged and the namespace pins are dropped anyway.
pub fn give_back(meta: &ContainerMeta, force: bool) -> anyhow::Result<()> {
    let Some(net) = &meta.network else {
        return Ok(());
    };
    let pod = meta.pod.as_deref().unwrap_or("-");
    match crate::net::detach(pod, net) {
        Ok(()) => Ok(()),
        Err(err) if force => {
            tracing::warn!(%pod, err = %err, "give back pod interfaces (forced: pins dropped)");
            crate::net::unpin_all(net);
            Ok(())
        }
        Err(err) => Err(err).with_context(|| format!("give back pod {pod}'s interfaces")),
    }
}

/// The staged spec at a path naming `bundle`; without it (a kernel or
/// sandbox refusing fsopen) hooks see the staging directory.
fn staged_alias(bundle: &Path, spec: &oci_spec::runtime::Spec) -> Option<BundleAlias> {
    let made = serde_json::to_vec(spec)
        .map_err(|e| e.to_string())
        .and_then(|body| BundleAlias::new(bundle, &body).map_err(|e| e.to_string()));
    match made {
        Ok(alias) => Some(alias),
        Err(err) => {
            tracing::warn!(%err, bundle = %bundle.display(), "hooks will see the staged bundle path");
            None
        }
    }
}

fn build(
    ctx: &Ctx,
    o: &CreateOpts<'_>,
    stage: &Path,
    driver: cgroups::Driver,
) -> anyhow::Result<Container> {
    ContainerBuilder::new(o.id.to_string(), SyscallType::default())
        .with_root_path(ctx.root.clone())?
        .with_pid_file(o.pid_file)?
        .with_console_socket(console_socket_path(o.console_socket)?)
        .with_preserved_fds(o.preserve_fds)
        .validate_id()?
        .as_init(stage)
        .with_systemd(driver == cgroups::Driver::Systemd)
        .with_detach(o.detach)
        .with_no_pivot(o.no_pivot)
        .build()
        .with_context(|| format!("create container {}", o.id))
}

/// Sets `nosuid,nodev` on the host's copies of the container's views now
/// that its init, in its own mount namespace, has bound its copies, which
/// keep the spec's options (see `views`). A container without a mount
/// namespace of its own would share the host's copies: left as they are.
fn harden_views(spec: &oci_spec::runtime::Spec, meta: &ContainerMeta) -> anyhow::Result<()> {
    use oci_spec::runtime::LinuxNamespaceType;
    let own_mounts = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|v| v.iter().any(|n| n.typ() == LinuxNamespaceType::Mount));
    if !own_mounts {
        tracing::warn!("no mount namespace in the spec: host-side views keep suid,dev");
        return Ok(());
    }
    // The device tmpfs too: the container's binds of its nodes are copies
    // made in the init's mount namespace and keep `dev`.
    let views = meta
        .rootfs_view
        .iter()
        .chain(&meta.volume_views)
        .chain(meta.devices.iter().map(|d| &d.dir));
    crate::views::harden(views.map(PathBuf::as_path))?;
    Ok(())
}

/// Places the created (not yet started) init in the container's cgroup2
/// hugetlb cgroup, where cnfbox enforces the limits.
fn join_hugetlb(container: &Container, meta: &ContainerMeta) -> anyhow::Result<()> {
    let Some(h) = &meta.hugepages else {
        return Ok(());
    };
    let pid = container
        .pid()
        .context("created container has no init pid")?;
    h.join(pid.as_raw())?;
    Ok(())
}

/// The init's `RLIMIT_MEMLOCK` as it was before libcgroups' device program
/// (`devices::rules`).
fn restore_memlock(container: &Container, spec: &oci_spec::runtime::Spec) -> anyhow::Result<()> {
    let pid = container
        .pid()
        .context("created container has no init pid")?;
    crate::devices::rules::restore_memlock(spec, pid)?;
    Ok(())
}

/// Moves the staged bundle into the state dir and records cnfbox's metadata.
fn finish(
    container: &mut Container,
    dir: &Path,
    stage: &Path,
    meta: &ContainerMeta,
) -> anyhow::Result<()> {
    // libcontainer made the directory 0755; what cnfbox keeps in it (the
    // spec, exec process files) is for host root only.
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("make {} private", dir.display()))?;
    let kept: PathBuf = dir.join(STAGED_BUNDLE);
    fs::rename(stage, &kept)
        .with_context(|| format!("move {} to {}", stage.display(), kept.display()))?;
    container.state.bundle = kept;
    container.save().context("save container state")?;
    meta.save(dir)?;
    Ok(())
}

/// Moves the CNI interfaces of an adopted network namespace into the new
/// init's (see `adopt`).
fn adopt_netns(c: &Container, from: Option<&Path>, id: &str) -> anyhow::Result<()> {
    let Some(from) = from else {
        return Ok(());
    };
    let pid = c.pid().with_context(|| {
        format!(
            "create container {id}: no init pid to adopt {}",
            from.display()
        )
    })?;
    let to = PathBuf::from(format!("/proc/{pid}/ns/net"));
    crate::adopt::move_links(from, &to)
        .and_then(|_| crate::adopt::show_pod_netns(from, &to))
        .with_context(|| {
            format!(
                "create container {id}: adopt the CNI network namespace {}",
                from.display()
            )
        })?;
    Ok(())
}

fn is_exist(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<libcontainer::error::LibcontainerError>(),
        Some(libcontainer::error::LibcontainerError::Exist)
    )
}

/// Removes what a failed create may have left: its state dir and cgroup.
fn cleanup_failed(dir: &Path, meta: &ContainerMeta, id: &str) {
    // Only the container dir of *this* create is removed: if it already
    // existed, `create` bailed out before reaching here.
    if dir.exists() {
        if let Err(err) = fs::remove_dir_all(dir) {
            tracing::warn!(%id, path = %dir.display(), %err, "remove state dir after failed create");
        }
    }
    if let Ok(manager) =
        libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
            cgroup_path: meta.cgroup_path.clone(),
            systemd_cgroup: meta.systemd,
            container_name: id.to_string(),
        })
    {
        use libcgroups::common::CgroupManager;
        // The failed init may still be exiting (a loaded node took longer
        // than libcgroups' own retries): what is left gets SIGKILL and the
        // removal is tried again, as `delete_container` does.
        const RETRIES: u32 = 100;
        for tries in 0.. {
            match manager.remove() {
                Ok(()) => break,
                Err(err) if tries >= RETRIES => {
                    tracing::warn!(%id, %err, "remove cgroup after failed create");
                    break;
                }
                Err(_) => {
                    for pid in manager.get_all_pids().unwrap_or_default() {
                        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
    }
}
