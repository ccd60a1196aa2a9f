//! `create` and `run`.
//!
//! Create plans first (`plan`: the spec in, what to make out; nothing is
//! made), then applies step by step, each step recorded in the container's
//! journal before it is made (`crate::journal`). Any failure goes through
//! one path: the journal's teardown, which undoes in reverse what the steps
//! made; the same teardown serves a failed start, `delete`, `delete
//! --force` and a create that was killed half-way.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::{bail, Context as _};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use liboci_cli::{Create, Run};

use super::{check_console, check_id, console_socket_path, container_dir, wait, Ctx};
use crate::bundle::{self, Bundle};
use crate::bundle_alias::BundleAlias;
use crate::cgroups;
use crate::failpoint;
use crate::journal::{self, Journal, Step};
use crate::meta::{ContainerMeta, STAGING};
use crate::views::{self, Kind};

mod after;
pub mod plan;

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

/// A created container and its journal.
pub struct Created {
    pub container: Container,
    pub journal: Journal,
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
    let Created {
        mut container,
        journal,
    } = create(
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
    let started = failpoint::hit("run:before-start")
        .map_err(anyhow::Error::from)
        .and_then(|()| container.start().map_err(anyhow::Error::from));
    if let Err(err) = started {
        let err = err.context(format!("start container {}", a.container_id));
        return Err(undo_failed(ctx, journal, err));
    }
    if a.detach {
        return Ok(0);
    }
    let code = wait::forward_until_exit(pid, &signals)?;
    if !a.keep {
        let warnings = journal::teardown(&ctx.root, journal, false, &crate::profile::release_range)
            .with_context(|| format!("delete container {} after exit", a.container_id))?;
        warnings.into_iter().for_each(|w| super::warn(Some(w)));
    }
    Ok(code)
}

/// Creates a container; on any failure its journal's teardown leaves
/// nothing behind (or says what it could not undo).
pub fn create(ctx: &Ctx, o: &CreateOpts<'_>) -> anyhow::Result<Created> {
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
    let plan = plan::plan(
        o.id,
        &bundle.spec,
        bundle.rootfs.path(),
        driver,
        setup,
        &plan::HostRoots::default(),
    )?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&ctx.root)
        .with_context(|| format!("create state root {}", ctx.root.display()))?;
    // Made by another user between the check at the start and here.
    super::check_root(&ctx.root)?;
    let mut journal =
        Journal::begin(&ctx.root, o.id).with_context(|| format!("create container {}", o.id))?;
    match apply(ctx, o, &bundle, plan, &mut journal) {
        Ok(container) => Ok(Created { container, journal }),
        Err(err) => Err(undo_failed(ctx, journal, err)),
    }
}

/// The one failure path of create and run: the journal's teardown. What it
/// could not undo is added to `err` (and stays in the journal).
fn undo_failed(ctx: &Ctx, mut journal: Journal, err: anyhow::Error) -> anyhow::Error {
    // This process is the creator: the teardown is its own.
    journal.creator = None;
    match journal::teardown(&ctx.root, journal, true, &crate::profile::release_range) {
        Ok(warnings) => {
            warnings.into_iter().for_each(|w| super::warn(Some(w)));
            err
        }
        Err(undo) => {
            tracing::error!(err = %undo, "teardown after a failed create");
            anyhow::anyhow!("{err:#}; then {undo}")
        }
    }
}

/// Applies `plan` step by step, each recorded in `journal` first.
fn apply(
    ctx: &Ctx,
    o: &CreateOpts<'_>,
    bundle: &Bundle,
    plan: plan::Plan,
    journal: &mut Journal,
) -> anyhow::Result<Container> {
    let context = || format!("create container {}", o.id);
    let plan::Plan {
        mut spec,
        cgroup_path,
        driver,
        numa,
        numa_unbound,
        hugepages: hugepage_plan,
        interfaces,
    } = plan;
    let paths = views::Paths::of(&ctx.root, o.id);
    failpoint::hit("create:before-range")?;
    let applied = crate::profile::apply(&ctx.root, o.id, &mut spec, &bundle.rootfs, journal)
        .with_context(context)?;
    let mapping = applied.mapping.as_ref();
    let hugepages = if hugepage_plan.is_empty() {
        None
    } else {
        journal.record(Step::Hugepages {
            mounts: paths.hugepages.clone(),
            cgroup2: hugepage_plan.cgroup2_dir(&cgroup_path),
        })?;
        views::mount_dir(&ctx.root, Kind::Hugepages).with_context(context)?;
        let record = crate::numa::hugepages::setup(
            hugepage_plan,
            &mut spec,
            &cgroup_path,
            &paths.hugepages,
            mapping,
        )
        .with_context(context)?;
        failpoint::hit("create:after-hugepages")?;
        Some(record)
    };
    // Device nodes: made on the host once the mapping is known (their
    // owners are the pod's host ids), on a tmpfs of the container's.
    let config = idmap::EtcRoot::default().config_path();
    if mapping.is_some() && crate::devices::wanted(&spec) {
        journal.record(Step::Devices {
            dir: paths.devices.clone(),
        })?;
    }
    let devices = crate::devices::setup(&ctx.root, o.id, &mut spec, mapping, &config)
        .with_context(context)?;
    if devices.is_some() {
        failpoint::hit("create:after-devices")?;
    }
    // What of libcgroups' default set the operator gives back (the console):
    // decided once, kept for updates.
    let granted_devices = crate::devices::Policy::load(&config)
        .map(|p| crate::devices::withheld::granted(&p))
        .with_context(context)?;
    let private_userns = mapping.is_some();
    let bound = !crate::host_ns::unbounded_caps(&spec, private_userns, &config);
    crate::capabilities::Policy::load(&config)
        .and_then(|policy| policy.apply_with(&mut spec, private_userns, bound))
        .with_context(context)?;
    if let Some(m) = mapping {
        crate::sysctl::fit_to_mapping(&mut spec, &m.gid).with_context(context)?;
    }
    crate::hooks::relay_through_cnfbox(&mut spec, &bundle.dir, &container_dir(ctx, o.id))
        .with_context(context)?;
    let stage = ctx
        .root
        .join(STAGING)
        .join(format!("{}.{}", o.id, std::process::id()));
    journal.record(Step::Stage { dir: stage.clone() })?;
    bundle::write_staged(&stage, &spec)?;
    failpoint::hit("create:after-stage")?;

    let mut meta = ContainerMeta {
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.path().to_path_buf(),
        cgroup_path: cgroup_path.clone(),
        systemd: driver == cgroups::Driver::Systemd,
        pod: Some(applied.pod.clone()),
        mapping: applied.mapping,
        sandbox: applied.sandbox,
        rootfs_view: applied.rootfs_view.clone(),
        volume_views: applied.volume_views.clone(),
        numa,
        numa_unbound,
        hugepages,
        network: None,
        devices,
        granted_devices,
        init_start: None,
    };
    // libcontainer records the path it loads the spec from as the bundle
    // that the in-container hooks see: give it the alias (see
    // `bundle_alias`), which names the user's bundle.
    let alias = staged_alias(&bundle.dir, &spec);
    let spec_dir = alias
        .as_ref()
        .map_or_else(|| stage.clone(), BundleAlias::path);
    journal.record(Step::Container {
        cgroup_path,
        systemd: meta.systemd,
    })?;
    // libcontainer writes state.json twice while it builds, cnfbox once at
    // `finish`: readers wait until the record is whole.
    let state_lock = crate::state_lock::StateLock::exclusive(&ctx.root, o.id)?;
    // libcontainer makes its state dir (`youki_config.json` holds the hook
    // environments) 0755 under the traversable state root; it makes it in
    // the private staging directory instead, and `after::into_place` moves
    // it to `<root>/<id>` once it is 0700 (see there).
    let private_root = after::private_root(&stage)?;
    let built = build(&private_root, o, &spec_dir, driver);
    drop(alias);
    if let Some(pin) = &applied.pinned {
        crate::host::unpin(pin);
    }
    let mut c = match built {
        Ok(c) => c,
        Err(err) => {
            // A concurrent create of the same id won the race: its state
            // is not ours to remove.
            if is_exist(&err) {
                journal.forget_last()?;
            }
            return Err(err);
        }
    };
    after::into_place(&mut c, &container_dir(ctx, o.id))?;
    failpoint::hit("create:after-init")?;
    after::harden_views(&spec, &meta)?;
    after::join_hugetlb(&c, &meta)?;
    after::restore_memlock(&c, &spec)?;
    after::systemd_scope(&c, &spec, &meta, &stage)?;
    after::withhold_devices(&c, &meta)?;
    after::disable_oom_killer(&c, &spec)?;
    after::adopt_netns(&c, applied.adopted_netns.as_deref(), o.id)?;
    if !interfaces.is_empty() {
        let net = after::attach_interfaces(ctx, o.id, &c, &applied.pod, journal, &interfaces)?;
        meta.network = Some(net);
    }
    meta.init_start = Some(after::init_start(&c)?);
    after::finish(&mut c, &container_dir(ctx, o.id), &stage)?;
    journal.commit(meta)?;
    drop(state_lock);
    failpoint::hit("create:after-state")?;
    Ok(c)
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
    root: &Path,
    o: &CreateOpts<'_>,
    stage: &Path,
    driver: cgroups::Driver,
) -> anyhow::Result<Container> {
    let context = || format!("create container {}", o.id);
    let stage = std::path::absolute(stage).with_context(context)?;
    let builder = ContainerBuilder::new(o.id.to_string(), SyscallType::default())
        .with_root_path(root)?
        .with_pid_file(o.pid_file)?
        .with_console_socket(console_socket_path(o.console_socket)?)
        .with_preserved_fds(o.preserve_fds)
        .validate_id()?
        .as_init(stage)
        .with_systemd(driver == cgroups::Driver::Systemd)
        .with_detach(o.detach)
        .with_no_pivot(o.no_pivot);
    // The init inherits the cwd (`host::cwd`); every path above is absolute.
    let _at_root = crate::host::cwd::AtRoot::enter().with_context(context)?;
    builder.build().with_context(context)
}

fn is_exist(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<libcontainer::error::LibcontainerError>(),
        Some(libcontainer::error::LibcontainerError::Exist)
    )
}
