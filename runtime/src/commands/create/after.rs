//! Create's steps once libcontainer made the init: harden the host-side
//! views, place the init in the hugetlb cgroup, restore its memlock limit,
//! deny the devices libcgroups allows and cnfbox withholds, disable the OOM
//! killer where asked, adopt a CNI network namespace, attach the pod's
//! interfaces, and move the state dir (made private) and the staged bundle
//! into the state root.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use libcontainer::container::Container;

use super::super::Ctx;
use crate::journal::{Journal, Step};
use crate::meta::{ContainerMeta, STAGED_BUNDLE};

/// Where libcontainer makes the container's state dir during create:
/// `<stage>/state`, in the staging directory (0700, in the 0700
/// `.staging`), so no host user can list or read what it writes there
/// (`youki_config.json` with every hook's environment) before it is private.
pub(super) fn private_root(stage: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let root = stage.join(PRIVATE_ROOT);
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&root)
        .with_context(|| format!("create private state root {}", root.display()))?;
    Ok(root)
}

/// libcontainer's state root during create, inside the staging directory.
const PRIVATE_ROOT: &str = "state";

/// Moves the state dir libcontainer made in the private root to `dir`
/// (`<root>/<id>`), 0700 before it is moved: it is never visible in the
/// state root with libcontainer's 0755. `RENAME_NOREPLACE`: a state dir
/// already there is not ours (the journal makes one create per id at a
/// time, so only a stale one can be). The init's notify socket moves with
/// the directory (a bound socket is found by its inode), so `start` finds
/// it at the new path.
pub(super) fn into_place(container: &mut Container, dir: &Path) -> anyhow::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    use std::os::unix::fs::PermissionsExt;
    let made = container.root.clone();
    fs::set_permissions(&made, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("make {} private", made.display()))?;
    renameat2(None, &made, None, dir, RenameFlags::RENAME_NOREPLACE)
        .with_context(|| format!("move {} to {}", made.display(), dir.display()))?;
    container.root = dir.to_path_buf();
    if let Some(private) = made.parent() {
        let _ = fs::remove_dir(private);
    }
    Ok(())
}

/// Attaches the pod's interfaces to the created container's network
/// namespace, recording them in its journal first so that a crash midway
/// leaves something `delete --force` can undo.
pub(super) fn attach_interfaces(
    ctx: &Ctx,
    id: &str,
    c: &Container,
    pod: &str,
    journal: &mut Journal,
    interfaces: &[crate::net::Request],
) -> anyhow::Result<crate::net::PodNetwork> {
    let pid = c.pid().context("created container has no init pid")?;
    crate::views::pins_dir(&ctx.root)?;
    let paths = crate::views::Paths::of(&ctx.root, id);
    let step = |net: &crate::net::PodNetwork| Step::Network {
        pod: pod.to_string(),
        net: net.clone(),
    };
    let claimed = || crate::journal::networks(&ctx.root, id);
    let net = crate::net::attach(
        &ctx.root,
        &paths,
        id,
        pid.as_raw(),
        interfaces,
        claimed,
        |net| journal.record_network(step(net)).map_err(Into::into),
    )
    .with_context(|| format!("create container {id}"))?;
    // What attach learnt on the way (the links as the pod sees them) is
    // what a give-back needs.
    journal.record_network(step(&net))?;
    Ok(net)
}

/// Sets `nosuid,nodev` on the host's copies of the container's views now
/// that its init, in its own mount namespace, has bound its copies, which
/// keep the spec's options (see `views`). A container without a mount
/// namespace of its own would share the host's copies: left as they are.
pub(super) fn harden_views(
    spec: &oci_spec::runtime::Spec,
    meta: &ContainerMeta,
) -> anyhow::Result<()> {
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
pub(super) fn join_hugetlb(container: &Container, meta: &ContainerMeta) -> anyhow::Result<()> {
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
pub(super) fn restore_memlock(
    container: &Container,
    spec: &oci_spec::runtime::Spec,
) -> anyhow::Result<()> {
    let pid = container
        .pid()
        .context("created container has no init pid")?;
    crate::devices::rules::restore_memlock(spec, pid)?;
    Ok(())
}

/// With `--systemd-cgroup` on cgroup v2: the device program on the scope
/// systemd made (libcgroups' systemd manager attaches none), and the
/// scope's cgroupfs path in the kept spec for `exec` (`devices::scope`).
/// Runs before `withhold_devices`, whose program it would replace.
pub(super) fn systemd_scope(
    container: &Container,
    spec: &oci_spec::runtime::Spec,
    meta: &ContainerMeta,
    stage: &Path,
) -> anyhow::Result<()> {
    if !meta.systemd {
        return Ok(());
    }
    let context = || format!("create container {}", container.id());
    let setup = crate::cgroups::setup().with_context(context)?;
    if !matches!(setup, libcgroups::common::CgroupSetup::Unified) {
        return Ok(());
    }
    let pid = container
        .pid()
        .context("created container has no init pid")?;
    let rules = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().clone());
    let scope = crate::devices::scope::cgroup_of_pid(Path::new("/proc"), pid.as_raw())
        .with_context(context)?;
    crate::devices::scope::attach(&crate::devices::scope::dir_of(&scope), &rules)
        .with_context(context)?;
    let mut kept = spec.clone();
    if let Some(linux) = kept.linux_mut() {
        linux.set_cgroups_path(Some(scope));
    }
    crate::bundle::write_staged(stage, &kept).with_context(context)?;
    Ok(())
}

/// Denies the console (libcgroups' default set allows it after the spec's
/// rules) on the container's cgroup before the init runs anything of the
/// pod's, unless `[devices] allow` gave it (`devices::withheld`).
pub(super) fn withhold_devices(container: &Container, meta: &ContainerMeta) -> anyhow::Result<()> {
    let pid = container
        .pid()
        .context("created container has no init pid")?;
    let denied = crate::devices::withheld::denied(&meta.granted_devices);
    crate::devices::withheld::deny(Path::new("/proc"), pid.as_raw(), &denied)
        .with_context(|| format!("withhold devices of container {}", container.id()))
}

/// `disableOOMKiller`, which libcontainer never applies (`oom_killer`).
pub(super) fn disable_oom_killer(
    container: &Container,
    spec: &oci_spec::runtime::Spec,
) -> anyhow::Result<()> {
    if !crate::oom_killer::asked(spec) {
        return Ok(());
    }
    let pid = container
        .pid()
        .context("created container has no init pid")?;
    crate::oom_killer::apply(Path::new("/proc"), pid.as_raw(), spec)?;
    Ok(())
}

/// The start time of the container's init, recorded so no later command
/// takes a process that reused its pid for it (`host::init`).
pub(super) fn init_start(container: &Container) -> anyhow::Result<u64> {
    let pid = container
        .pid()
        .context("created container has no init pid")?;
    Ok(crate::host::init::start_time(
        Path::new("/proc"),
        pid.as_raw(),
    )?)
}

/// Moves the staged bundle into the state dir.
pub(super) fn finish(container: &mut Container, dir: &Path, stage: &Path) -> anyhow::Result<()> {
    // The directory is 0700 since `into_place`: what cnfbox keeps in it
    // (the spec, exec process files) is for host root only.
    let kept: PathBuf = dir.join(STAGED_BUNDLE);
    fs::rename(stage, &kept)
        .with_context(|| format!("move {} to {}", stage.display(), kept.display()))?;
    container.state.bundle = kept;
    container.save().context("save container state")?;
    Ok(())
}

/// Moves the CNI interfaces of an adopted network namespace into the new
/// init's (see `adopt`).
pub(super) fn adopt_netns(c: &Container, from: Option<&Path>, id: &str) -> anyhow::Result<()> {
    let Some(from) = from else {
        return Ok(());
    };
    let pid = c.pid().with_context(|| {
        format!(
            "create container {id}: no init pid to adopt {}",
            from.display()
        )
    })?;
    let to = crate::host::ns::of_pid(pid.as_raw(), "net");
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
