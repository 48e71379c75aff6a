//! The guest: an initramfs made of the host's own files, at the paths they have on the host.
//!
//! Three archives are concatenated into one initrd (the kernel unpacks each in turn):
//! - the common part, built once per run of xtask: busybox and its applets, the tools the
//!   tests run (runc, ip, ethtool, bpftool, skopeo, docker-registry, tar) with their shared
//!   libraries, the workspace's binaries (hostnetd, netprobe, the e2e test executables, at
//!   their absolute paths: the tests find netprobe beside themselves), the sample images, a
//!   minimal /etc and the two init stages (guest/init, guest/stage2);
//! - the kernel's modules (those of [`MODULES`] it does not have built in, with their
//!   dependencies, decompressed and indexed by depmod for busybox's modprobe);
//! - the payload: the shell command to run.
use std::{
    collections::BTreeMap,
    fs,
    io::{self, BufWriter, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use super::{cpio::CpioWriter, kernels::Kernel};
use crate::shell::say;

/// Kernel modules the guest loads unless the kernel has them built in: veth pairs (the
/// accounting tests' peers), clsact, cls_bpf and act_bpf (tc programs where there is no
/// TCX), cls_u32 (the kernel tests' stand-in for an administrator's own filter), fq (pacing)
/// and overlay (image containers' root filesystems).
const MODULES: [&str; 7] = [
    "veth",
    "sch_ingress",
    "cls_bpf",
    "act_bpf",
    "cls_u32",
    "sch_fq",
    "overlay",
];

/// Host programs the tests and hostnetd run, copied with their libraries (busybox has applets
/// of some, too limited: its tc knows no clsact).
const TOOLS: [&str; 9] = [
    "runc",
    "iperf3",
    "ip",
    "tc",
    "ethtool",
    "bpftool",
    "skopeo",
    "docker-registry",
    "tar",
];
/// Where [`TOOLS`] are looked for on the host.
const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];
/// Host configuration copied as it is: skopeo refuses to copy an image without a trust
/// policy (/etc/containers/policy.json), and hostnetd's registry client will not start
/// without the system's CA certificates, even for a plain-HTTP registry.
const HOST_CONFIG: [&str; 2] = ["/etc/containers", "/etc/ssl/certs"];
/// The static busybox of busybox-static: the guest's shell, init tools and coreutils.
const BUSYBOX: &str = "/bin/busybox";

/// The guest's directory of its own files.
pub const GUEST_DIR: &str = "/hostnetd-vm";
const STAGE1: &str = include_str!("guest/init");
const STAGE2: &str = include_str!("guest/stage2");

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1\tlocalhost hostnetd-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n";
const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files\n";

/// What the guest runs: the workspace's binaries and the test environment.
pub struct Workspace {
    /// The workspace root, the payload's working directory.
    pub root: PathBuf,
    pub hostnetd: PathBuf,
    pub netprobe: PathBuf,
    /// The e2e test executables by test name (tests/tests/NAME.rs).
    pub tests: Vec<(String, PathBuf)>,
    /// The sample images (HOSTNETD_TEST_IMAGES).
    pub images: PathBuf,
}

/// Where a file's content comes from.
enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

enum Node {
    Directory(u32),
    File { source: Source, permissions: u32 },
    Symlink(String),
}

/// A file tree for the guest, by path relative to its root ("usr/bin/busybox").
#[derive(Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    fn directory(&mut self, path: &str, permissions: u32) {
        self.parents(path);
        self.nodes
            .insert(relative(path), Node::Directory(permissions));
    }

    fn bytes(&mut self, path: &str, permissions: u32, content: impl Into<Vec<u8>>) {
        self.insert(
            path,
            Node::File {
                source: Source::Bytes(content.into()),
                permissions,
            },
        );
    }

    /// The host file `source` at `path`, with its permissions.
    fn host_file(&mut self, path: &str, source: &Path) -> anyhow::Result<()> {
        let permissions = fs::metadata(source)
            .with_context(|| format!("cannot read {}", source.display()))?
            .permissions()
            .mode()
            & 0o7777;
        self.insert(
            path,
            Node::File {
                source: Source::Host(source.to_path_buf()),
                permissions,
            },
        );
        Ok(())
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Node::Symlink(target.to_string()));
    }

    /// Whether something is at `path` already.
    fn has(&self, path: &str) -> bool {
        self.nodes.contains_key(&relative(path))
    }

    fn insert(&mut self, path: &str, node: Node) {
        self.parents(path);
        self.nodes.insert(relative(path), node);
    }

    /// Every directory above `path`, as directories (0755) unless already there.
    fn parents(&mut self, path: &str) {
        let relative = relative(path);
        for (end, _) in relative.match_indices('/') {
            self.nodes
                .entry(relative[..end].to_string())
                .or_insert(Node::Directory(0o755));
        }
    }

    /// The tree as a newc archive; a parent sorts before what it holds.
    fn write(&self, out: impl io::Write) -> anyhow::Result<()> {
        let mut cpio = CpioWriter::new(out);
        for (path, node) in &self.nodes {
            match node {
                Node::Directory(permissions) => cpio.directory(path, *permissions)?,
                Node::Symlink(target) => cpio.symlink(path, target)?,
                Node::File {
                    source: Source::Bytes(bytes),
                    permissions,
                } => cpio.file(path, *permissions, bytes.len() as u64, bytes.as_slice())?,
                Node::File {
                    source: Source::Host(source),
                    permissions,
                } => {
                    let mut file = fs::File::open(source)
                        .with_context(|| format!("cannot open {}", source.display()))?;
                    let size = file.metadata()?.len();
                    cpio.file(path, *permissions, size, &mut file)
                        .with_context(|| format!("cannot archive {}", source.display()))?;
                }
            }
        }
        cpio.finish()?.flush()?;
        Ok(())
    }
}

/// `path` without its leading slash.
fn relative(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

/// `path` as the guest must hold it: its directories resolved through the host's symlinks
/// (Debian's merged /usr: /bin is usr/bin), which the guest has as the same symlinks, so
/// that nothing is ever placed below a symlink. The last component is kept as it is (/bin/sh
/// is busybox's applet, not what /bin/sh links to on the host), and so is the part of the
/// path the host does not have.
fn real_location(path: &Path) -> PathBuf {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return path.to_path_buf();
    };
    match parent.canonicalize() {
        Ok(real) => real.join(name),
        Err(_) => real_location(parent).join(name),
    }
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Adds the host file at `path` at the same place, following symlinks: each link on the way
/// is added as a link (a library's soname link, the loader's /lib64 link), then its target.
fn add_host_path(tree: &mut Tree, path: &Path) -> anyhow::Result<()> {
    let path = real_location(path);
    let parent = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    if tree.has(&text(&path)) {
        return Ok(());
    }
    let meta = fs::symlink_metadata(&path)
        .with_context(|| format!("cannot find {} on this host", path.display()))?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(&path)?;
        tree.symlink(&text(&path), &text(&target));
        return add_host_path(tree, &parent.join(target));
    }
    if meta.is_dir() {
        tree.directory(&text(&path), meta.permissions().mode() & 0o7777);
        for entry in fs::read_dir(&path)? {
            add_host_path(tree, &entry?.path())?;
        }
        return Ok(());
    }
    tree.host_file(&text(&path), &path)
}

/// Adds a dynamically linked program's shared libraries and loader (found by ldd).
fn add_libraries(tree: &mut Tree, program: &Path) -> anyhow::Result<()> {
    let output = Command::new("ldd")
        .arg(program)
        .output()
        .context("cannot run ldd")?;
    // A static program makes ldd fail with "not a dynamic executable": nothing to add.
    for library in parse_ldd(&String::from_utf8_lossy(&output.stdout)) {
        add_host_path(tree, &library)
            .with_context(|| format!("a library of {}", program.display()))?;
    }
    Ok(())
}

/// The files ldd names: `libc.so.6 => /lib/.../libc.so.6 (0x...)` and the loader's
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
pub fn parse_ldd(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = line.split_once(" => ").map_or(line, |(_, path)| path);
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Adds a host program found in [`TOOL_DIRS`], with its libraries.
fn add_tool(tree: &mut Tree, name: &str) -> anyhow::Result<()> {
    let path = TOOL_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .with_context(|| {
            format!("{name} is not installed: `cargo xtask setup` installs what the VM needs")
        })?;
    add_host_path(tree, &path)?;
    add_libraries(tree, &path)
}

/// busybox, and a link for each of its applets that no copied tool already provides.
fn add_busybox(tree: &mut Tree) -> anyhow::Result<()> {
    let busybox = real_location(Path::new(BUSYBOX));
    add_host_path(tree, &busybox)?;
    let applets = Command::new(&busybox)
        .arg("--list-full")
        .output()
        .context("cannot list busybox's applets: install busybox-static")?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let path = text(&real_location(&Path::new("/").join(applet)));
        if !tree.has(&path) {
            tree.symlink(&path, &text(&busybox));
        }
    }
    Ok(())
}

/// The top-level symlinks of merged /usr (/bin -> usr/bin, ...), as the host has them.
fn add_top_level_links(tree: &mut Tree) {
    for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let path = Path::new("/").join(name);
        if let Ok(target) = fs::read_link(&path) {
            tree.symlink(&text(&path), &text(&target));
        }
    }
}

/// The host's top-level directories, empty (the tests mount onto /srv and /media, which a
/// Debian host has), and the guest's own.
fn add_base_system(tree: &mut Tree) -> anyhow::Result<()> {
    for entry in fs::read_dir("/").context("cannot list the host's root directory")? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let name = text(&entry.path());
            tree.directory(&name, meta.permissions().mode() & 0o7777);
        }
    }
    for dir in ["proc", "sys", "dev", "run", "var/lib", "etc"] {
        tree.directory(dir, 0o755);
    }
    tree.directory("root", 0o700);
    tree.directory("tmp", 0o1777);
    tree.directory("var/tmp", 0o1777);
    tree.bytes("etc/passwd", 0o644, PASSWD);
    tree.bytes("etc/group", 0o644, GROUP);
    tree.bytes("etc/hosts", 0o644, HOSTS);
    tree.bytes("etc/hostname", 0o644, "hostnetd-vm\n");
    tree.bytes("etc/nsswitch.conf", 0o644, NSSWITCH);
    tree.symlink("etc/mtab", "/proc/self/mounts");
    tree.bytes("init", 0o755, STAGE1);
    tree.bytes(&format!("{GUEST_DIR}/stage2"), 0o755, STAGE2);
    Ok(())
}

/// A binary of the workspace, without its debug information (most of a debug build's size,
/// and the guest holds its files in memory twice while it boots); the stripped copy is kept
/// in `stripped` and remade when the binary changes.
fn add_workspace_binary(
    tree: &mut Tree,
    binary: &Path,
    target_dir: &Path,
    stripped: &Path,
) -> anyhow::Result<()> {
    let binary = real_location(binary);
    let relative = binary.strip_prefix(target_dir).unwrap_or(&binary);
    let copy = stripped.join(relative.strip_prefix("/").unwrap_or(relative));
    if !is_newer(&copy, &binary) {
        fs::create_dir_all(copy.parent().unwrap_or(stripped))?;
        // Stripped beside, then renamed: another run may be reading the copy.
        let partial = copy.with_extension(format!("{}.partial", std::process::id()));
        crate::shell::run(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(&binary)
                .arg(&partial),
        )
        .with_context(|| format!("cannot strip {}", binary.display()))?;
        fs::rename(&partial, &copy)?;
    }
    tree.host_file(&text(&binary), &copy)?;
    add_libraries(tree, &binary)
}

/// Whether `path` exists and was modified after `than`.
fn is_newer(path: &Path, than: &Path) -> bool {
    let modified = |path: &Path| fs::metadata(path).and_then(|meta| meta.modified());
    matches!((modified(path), modified(than)), (Ok(a), Ok(b)) if a > b)
}

/// The environment of the payload: the test environment of `cargo xtask test`.
fn environment(workspace: &Workspace) -> String {
    let root = real_location(&workspace.root);
    let bin_dir = real_location(workspace.hostnetd.parent().unwrap_or(Path::new("/")));
    let variables = [
        ("HOSTNETD_BIN", text(&real_location(&workspace.hostnetd))),
        (
            "HOSTNETD_TEST_IMAGES",
            text(&real_location(&workspace.images)),
        ),
        ("HOSTNETD_VM_TESTS", format!("{GUEST_DIR}/tests")),
        ("HOSTNETD_VM_WORKDIR", text(&root)),
        (
            "PATH",
            format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                text(&bin_dir)
            ),
        ),
        ("HOME", "/root".to_string()),
    ];
    variables
        .iter()
        .map(|(name, value)| format!("export {name}={}\n", shell_quote(value)))
        .collect()
}

/// `value` as one word of a POSIX shell command.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Writes the common part of the initrd (everything but the modules and the command) to
/// `out`.
pub fn build_common(workspace: &Workspace, stripped: &Path, out: &Path) -> anyhow::Result<()> {
    say("VM: building the guest's initramfs (tools, binaries, images)");
    let mut tree = Tree::default();
    add_top_level_links(&mut tree);
    add_base_system(&mut tree)?;
    for tool in TOOLS {
        add_tool(&mut tree, tool)?;
    }
    for config in HOST_CONFIG {
        if Path::new(config).exists() {
            add_host_path(&mut tree, Path::new(config))?;
        }
    }
    add_busybox(&mut tree)?;
    let target_dir = real_location(&workspace.root.join("target"));
    add_workspace_binary(&mut tree, &workspace.hostnetd, &target_dir, stripped)?;
    add_workspace_binary(&mut tree, &workspace.netprobe, &target_dir, stripped)?;
    for (name, executable) in &workspace.tests {
        add_workspace_binary(&mut tree, executable, &target_dir, stripped)?;
        tree.symlink(
            &format!("{GUEST_DIR}/tests/{name}"),
            &text(&real_location(executable)),
        );
    }
    add_images(&mut tree, &workspace.images)?;
    tree.directory(&text(&real_location(&workspace.root)), 0o755);
    tree.directory(&text(&real_location(&workspace.root.join("tests"))), 0o755);
    tree.bytes(&format!("{GUEST_DIR}/env"), 0o644, environment(workspace));
    write_archive(&tree, out)
}

/// The sample images' archives (not the directory's work files).
fn add_images(tree: &mut Tree, images: &Path) -> anyhow::Result<()> {
    let images = real_location(images);
    let entries = fs::read_dir(&images)
        .with_context(|| format!("no sample images in {}", images.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_file() {
            tree.host_file(&text(&path), &path)?;
        }
    }
    Ok(())
}

/// Uncompressed: the initrd is rebuilt on every run, and compressing it here and inflating it
/// in an emulated guest both take longer than carrying its bytes.
fn write_archive(tree: &Tree, out: &Path) -> anyhow::Result<()> {
    let file = fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut out = BufWriter::new(file);
    tree.write(&mut out)?;
    out.flush()?;
    Ok(())
}

/// A guest that only reports success: whether a machine boots at all (the KVM probe).
pub fn build_probe(out: &Path) -> anyhow::Result<()> {
    let mut tree = Tree::default();
    add_top_level_links(&mut tree);
    add_host_path(&mut tree, &real_location(Path::new(BUSYBOX)))?;
    tree.bytes(
        "init",
        0o755,
        format!(
            "#!{BUSYBOX} sh\n{BUSYBOX} echo HOSTNETD-VM-EXIT 0\n{BUSYBOX} sleep 1\n\
             {BUSYBOX} reboot -f\n"
        ),
    );
    write_archive(&tree, out)
}

/// The initrd for `kernel` running `command`: the common part, then the kernel's modules and
/// the command. Written to `run_dir/initrd-<kernel>.img`, returned.
pub fn build_initrd(
    kernel: &Kernel,
    common: &Path,
    command: &str,
    run_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let mut tree = Tree::default();
    add_modules(&mut tree, kernel, &run_dir.join("modules"))?;
    tree.bytes(&format!("{GUEST_DIR}/command"), 0o644, command);
    tree.bytes(&format!("{GUEST_DIR}/kernel"), 0o644, kernel.name);
    let initrd = run_dir.join(format!("initrd-{}.img", kernel.name));
    fs::copy(common, &initrd)
        .with_context(|| format!("cannot copy {} to {}", common.display(), initrd.display()))?;
    let out = fs::OpenOptions::new().append(true).open(&initrd)?;
    tree.write(BufWriter::new(out))?;
    Ok(initrd)
}

/// The modules of [`MODULES`] that `kernel` does not have built in, with those they depend
/// on: decompressed into `staging/<release>` (depmod indexes them there) and added to the
/// tree with the list the guest loads (/hostnetd-vm/modules).
fn add_modules(tree: &mut Tree, kernel: &Kernel, staging: &Path) -> anyhow::Result<()> {
    let read = |name: &str| {
        let path = kernel.modules.join(name);
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let plan = plan_modules(&MODULES, &read("modules.dep")?, &read("modules.builtin")?)
        .with_context(|| format!("kernel {} ({})", kernel.name, kernel.release))?;
    let root = staging.join(&kernel.release);
    if root.exists() {
        // Plain files xtask made below target/vm: no mount point can be there.
        fs::remove_dir_all(&root).with_context(|| format!("cannot remove {}", root.display()))?;
    }
    let modules_dir = root.join("lib/modules").join(&kernel.release);
    for file in &plan.files {
        decompress_module(&kernel.modules.join(file), &modules_dir.join(file))?;
    }
    // What depmod reads besides the modules (and busybox's modprobe, modules.builtin).
    for index in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let from = kernel.modules.join(index);
        if from.is_file() {
            fs::copy(&from, modules_dir.join(index))
                .with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    crate::shell::run(
        Command::new("depmod")
            .arg("-b")
            .arg(&root)
            .arg(&kernel.release),
    )
    .context("depmod failed on the guest's modules")?;
    let guest_dir = real_location(&Path::new("/lib/modules").join(&kernel.release));
    add_staged_tree(tree, &modules_dir, &guest_dir)?;
    tree.bytes(
        &format!("{GUEST_DIR}/modules"),
        0o644,
        plan.load.join("\n") + "\n",
    );
    Ok(())
}

/// Adds the files below `dir` at the same place below `guest_dir`.
fn add_staged_tree(tree: &mut Tree, dir: &Path, guest_dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let guest = guest_dir.join(path.file_name().unwrap_or_default());
        if path.is_dir() {
            add_staged_tree(tree, &path, &guest)?;
        } else {
            tree.host_file(&text(&guest), &path)?;
        }
    }
    Ok(())
}

/// Copies a module to `to` (whose name keeps only ".ko"), decompressing an .xz or .zst one:
/// busybox's modprobe loads plain modules only.
fn decompress_module(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to.parent().unwrap_or(Path::new("/")))?;
    let name = text(from);
    let (tool, plain) = if let Some(plain) = name.strip_suffix(".xz") {
        (Some("xz"), plain)
    } else if let Some(plain) = name.strip_suffix(".zst") {
        (Some("zstd"), plain)
    } else {
        (None, name.as_str())
    };
    let to = to.with_file_name(Path::new(plain).file_name().unwrap_or_default());
    let Some(tool) = tool else {
        fs::copy(from, &to).with_context(|| format!("cannot copy {name}"))?;
        return Ok(());
    };
    let output = Command::new(tool)
        .arg("-dc")
        .arg(from)
        .output()
        .with_context(|| format!("cannot run {tool}: install xz-utils and zstd"))?;
    if !output.status.success() {
        bail!(
            "{tool} cannot decompress {name}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    fs::write(&to, output.stdout).with_context(|| format!("cannot write {}", to.display()))
}

/// Which of the wanted modules a kernel has built in, which the guest loads, and the module
/// files that takes (paths relative to lib/modules/<release>, dependencies included).
#[derive(Debug, PartialEq)]
pub struct ModulePlan {
    pub builtin: Vec<String>,
    pub load: Vec<String>,
    pub files: Vec<String>,
}

/// Plans the wanted modules from the kernel's modules.dep ("kernel/net/x.ko.xz: dep.ko.xz
/// ...") and modules.builtin (one "kernel/net/y.ko" a line); a module that is neither is
/// an error.
pub fn plan_modules(
    wanted: &[&str],
    modules_dep: &str,
    builtin: &str,
) -> anyhow::Result<ModulePlan> {
    let dependencies: BTreeMap<String, (String, Vec<String>)> = modules_dep
        .lines()
        .filter_map(|line| {
            let (file, deps) = line.split_once(':')?;
            let deps = deps.split_whitespace().map(str::to_string).collect();
            Some((module_name(file), (file.trim().to_string(), deps)))
        })
        .collect();
    let builtins: Vec<String> = builtin.lines().map(module_name).collect();
    let mut plan = ModulePlan {
        builtin: Vec::new(),
        load: Vec::new(),
        files: Vec::new(),
    };
    for wanted in wanted {
        let name = wanted.replace('-', "_");
        if builtins.contains(&name) {
            plan.builtin.push(name);
            continue;
        }
        let Some((file, deps)) = dependencies.get(&name) else {
            bail!("the kernel module {wanted} is neither built in nor in modules.dep");
        };
        for file in deps.iter().chain([file]) {
            if !plan.files.contains(file) {
                plan.files.push(file.clone());
            }
        }
        plan.load.push(name);
    }
    Ok(plan)
}

/// A module's name from its file: "kernel/net/sched/sch-x.ko.xz" is "sch_x".
fn module_name(file: &str) -> String {
    let file_name = Path::new(file.trim())
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_default();
    let name = file_name.split(".ko").next().unwrap_or_default();
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_library_and_loader_paths() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibseccomp.so.2 => /lib/x86_64-linux-gnu/libseccomp.so.2 (0x00007f11)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f12)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f13)\n";
        assert_eq!(
            parse_ldd(output),
            [
                "/lib/x86_64-linux-gnu/libseccomp.so.2",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    const MODULES_DEP: &str = "kernel/net/sched/cls_bpf.ko.xz:\n\
        kernel/drivers/net/veth.ko.xz:\n\
        kernel/fs/overlayfs/overlay.ko.xz:\n\
        kernel/net/sched/act_bpf.ko.xz: kernel/net/sched/act-base.ko.xz\n\
        kernel/net/sched/act-base.ko.xz:\n";
    const BUILTIN: &str = "kernel/net/sched/sch_ingress.ko\nkernel/net/ipv6/ipv6.ko\n";

    #[test]
    fn modules_are_loaded_with_their_dependencies_unless_built_in() {
        let plan = plan_modules(
            &["veth", "sch_ingress", "act_bpf", "cls-bpf"],
            MODULES_DEP,
            BUILTIN,
        )
        .unwrap();
        assert_eq!(plan.builtin, ["sch_ingress"]);
        assert_eq!(plan.load, ["veth", "act_bpf", "cls_bpf"]);
        assert_eq!(
            plan.files,
            [
                "kernel/drivers/net/veth.ko.xz",
                "kernel/net/sched/act-base.ko.xz",
                "kernel/net/sched/act_bpf.ko.xz",
                "kernel/net/sched/cls_bpf.ko.xz",
            ]
        );
    }

    #[test]
    fn a_module_the_kernel_lacks_is_an_error() {
        let error = plan_modules(&["sch_fq"], MODULES_DEP, BUILTIN).unwrap_err();
        assert!(error.to_string().contains("sch_fq"), "{error}");
    }

    #[test]
    fn shell_words_survive_quotes() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn parents_come_before_what_they_hold() {
        let mut tree = Tree::default();
        tree.bytes("usr/bin/x", 0o755, "x");
        tree.symlink("usr-link", "usr");
        let paths: Vec<&str> = tree.nodes.keys().map(String::as_str).collect();
        assert_eq!(paths, ["usr", "usr-link", "usr/bin", "usr/bin/x"]);
    }
}
