//! `cargo xtask layers`: no import cycle between the workspace's source files, and none between
//! the agent's module groups (api, daemon, host, ownership...).
//!
//! Each crate's module tree is read from its `mod` declarations; every `use` and every path that
//! starts at `crate`, `super`, `self` or a child module is an edge from the file it is written in to the file of
//! the module it names (an item re-exported by a parent counts as its parent's). Code under
//! `#[cfg(test)]` is left out: a test may reach for any helper. A cycle is printed with the
//! names that tie each edge, and fails the check.
//!
//! cargo-modules' `--acyclic` was the first choice; it treats a type and its own methods as a
//! cycle, so every `impl` with a method returning `Self` fails it.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};
use syn::visit::Visit;

use crate::shell::{say, workspace_root};

/// The crate roots checked, and whether their top-level modules are groups that must not
/// depend on each other in a circle.
const CRATES: [(&str, bool); 7] = [
    ("agent/src/lib.rs", true),
    ("agent/src/main.rs", false),
    ("agent/src/bin/hostnetd-runc/main.rs", false),
    ("common/src/lib.rs", false),
    ("datapath-ebpf/src/main.rs", false),
    ("tests/src/lib.rs", false),
    ("xtask/src/main.rs", false),
];

pub fn layers() -> anyhow::Result<()> {
    let root = workspace_root();
    let mut failures = Vec::new();
    for (crate_root, grouped) in CRATES {
        let graph = Graph::read(&root, Path::new(crate_root))?;
        failures.extend(
            graph
                .cycles()
                .into_iter()
                .map(|cycle| graph.describe(&cycle)),
        );
        if grouped {
            let groups = graph.grouped();
            failures.extend(
                groups
                    .cycles()
                    .into_iter()
                    .map(|cycle| groups.describe(&cycle)),
            );
        }
    }
    if !failures.is_empty() {
        bail!(
            "import cycles (a file reaches itself through its imports):\n{}\nmove what both \
             sides need below both, so that imports point one way",
            failures.join("\n")
        );
    }
    say("no import cycle between files or between the agent's module groups");
    Ok(())
}

/// Files (or module groups) and the imports between them, with the names behind each edge.
#[derive(Default)]
struct Graph {
    /// Module path (`host::run`) to its file, relative to the workspace.
    modules: BTreeMap<String, PathBuf>,
    edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Graph {
    fn read(root: &Path, crate_root: &Path) -> anyhow::Result<Self> {
        let mut graph = Self::default();
        graph.add_module(root, String::new(), crate_root)?;
        let files: Vec<(String, PathBuf)> = (graph.modules.iter())
            .map(|(module, file)| (module.clone(), file.clone()))
            .collect();
        for (module, file) in files {
            let text = fs::read_to_string(root.join(&file))
                .with_context(|| format!("reading {}", file.display()))?;
            let syntax =
                syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
            let mut paths = Paths::default();
            paths.visit_file(&syntax);
            for path in paths.found {
                if let Some((target, name)) = graph.resolve(&module, &path) {
                    if target != module {
                        (graph.edges.entry(module.clone()).or_default())
                            .entry(target)
                            .or_default()
                            .insert(name);
                    }
                }
            }
        }
        Ok(graph)
    }

    /// Records `file` as module `module` and, below it, every module its `mod` items name.
    fn add_module(&mut self, root: &Path, module: String, file: &Path) -> anyhow::Result<()> {
        let text = fs::read_to_string(root.join(file))
            .with_context(|| format!("reading {}", file.display()))?;
        let syntax =
            syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        self.modules.insert(module.clone(), file.to_path_buf());
        let dir = module_dir(file);
        for item in &syntax.items {
            let syn::Item::Mod(child) = item else {
                continue;
            };
            if child.content.is_some() || is_test_only(&child.attrs) {
                continue;
            }
            let name = child.ident.to_string();
            let flat = dir.join(format!("{name}.rs"));
            let nested = dir.join(&name).join("mod.rs");
            let child_file = if root.join(&flat).exists() {
                flat
            } else {
                nested
            };
            self.add_module(root, join(&module, &name), &child_file)?;
        }
        Ok(())
    }

    /// The module a path written in `from` reaches, and the name it takes there.
    fn resolve(&self, from: &str, path: &[String]) -> Option<(String, String)> {
        let mut at: Vec<&str> = from.split("::").filter(|s| !s.is_empty()).collect();
        let mut rest = path;
        match rest.first()?.as_str() {
            "crate" => {
                at.clear();
                rest = &rest[1..];
            }
            "self" => rest = &rest[1..],
            "super" => {
                while rest.first().is_some_and(|s| s == "super") {
                    at.pop()?;
                    rest = &rest[1..];
                }
            }
            // 2018 paths: a child module's name starts a path relative to this module.
            child if self.modules.contains_key(&join(from, child)) => {}
            _ => return None,
        }
        let mut module = at.join("::");
        let mut name = String::new();
        for segment in rest {
            let deeper = join(&module, segment);
            if self.modules.contains_key(&deeper) {
                module = deeper;
            } else {
                name = segment.clone();
                break;
            }
        }
        if name.is_empty() {
            name = rest.last().cloned().unwrap_or_else(|| "self".into());
        }
        Some((module, name))
    }

    /// The same imports between top-level modules (the crate root itself left out).
    fn grouped(&self) -> Graph {
        let group = |module: &str| module.split("::").next().unwrap_or_default().to_string();
        let mut groups = Graph::default();
        for (from, targets) in &self.edges {
            for (to, names) in targets {
                let (a, b) = (group(from), group(to));
                if a.is_empty() || b.is_empty() || a == b {
                    continue;
                }
                groups
                    .modules
                    .insert(a.clone(), PathBuf::from(format!("{a}/")));
                groups
                    .modules
                    .insert(b.clone(), PathBuf::from(format!("{b}/")));
                let tied = names.iter().map(|name| format!("{to}::{name}"));
                (groups.edges.entry(a).or_default())
                    .entry(b)
                    .or_default()
                    .extend(tied);
            }
        }
        groups
    }

    /// Every strongly connected set of two or more modules (Tarjan).
    fn cycles(&self) -> Vec<Vec<String>> {
        let mut tarjan = Tarjan::default();
        for module in self.modules.keys() {
            if !tarjan.index.contains_key(module) {
                tarjan.visit(self, module);
            }
        }
        tarjan.found
    }

    fn describe(&self, cycle: &[String]) -> String {
        let members: BTreeSet<&String> = cycle.iter().collect();
        let mut text = String::from("  cycle:");
        for module in &members {
            text.push_str(&format!(" {}", self.modules[*module].display()));
        }
        for from in &members {
            for (to, names) in self.edges.get(*from).into_iter().flatten() {
                if members.contains(to) {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    text.push_str(&format!(
                        "\n    {} -> {}: {}",
                        self.modules[*from].display(),
                        self.modules[to].display(),
                        names.join(", ")
                    ));
                }
            }
        }
        text
    }
}

#[derive(Default)]
struct Tarjan {
    next: usize,
    index: BTreeMap<String, usize>,
    low: BTreeMap<String, usize>,
    stack: Vec<String>,
    found: Vec<Vec<String>>,
}

impl Tarjan {
    fn visit(&mut self, graph: &Graph, module: &str) {
        self.index.insert(module.to_string(), self.next);
        self.low.insert(module.to_string(), self.next);
        self.next += 1;
        self.stack.push(module.to_string());
        for next in graph.edges.get(module).into_iter().flat_map(|e| e.keys()) {
            if !self.index.contains_key(next) {
                self.visit(graph, next);
                let low = self.low[module].min(self.low[next]);
                self.low.insert(module.to_string(), low);
            } else if self.stack.contains(next) {
                let low = self.low[module].min(self.index[next]);
                self.low.insert(module.to_string(), low);
            }
        }
        if self.low[module] == self.index[module] {
            let at = self.stack.iter().rposition(|m| m == module).unwrap_or(0);
            let members = self.stack.split_off(at);
            if members.len() > 1 {
                self.found.push(members);
            }
        }
    }
}

/// Every path of a file that could name a module of its crate: `use` trees, expanded, and
/// paths in code; test-only items skipped.
#[derive(Default)]
struct Paths {
    found: Vec<Vec<String>>,
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if !is_test_only(&item.attrs) {
            expand(&item.tree, &mut Vec::new(), &mut self.found);
        }
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_fn(self, item);
        }
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        if !is_test_only(&item.attrs) {
            syn::visit::visit_item_impl(self, item);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            self.found.push(segments);
        }
        syn::visit::visit_path(self, path);
    }
}

fn expand(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            expand(&path.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(name) => {
            let mut full = prefix.clone();
            if name.ident != "self" {
                full.push(name.ident.to_string());
            }
            out.push(full);
        }
        syn::UseTree::Rename(rename) => {
            let mut full = prefix.clone();
            full.push(rename.ident.to_string());
            out.push(full);
        }
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(group) => {
            for item in &group.items {
                expand(item, prefix, out);
            }
        }
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Ident>()
                .is_ok_and(|ident| ident == "test")
    })
}

/// Where a module's children live: beside a crate root or `mod.rs`, else in a folder of the
/// module's own name.
fn module_dir(file: &Path) -> PathBuf {
    let parent = file.parent().unwrap_or(Path::new("")).to_path_buf();
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if ["mod", "lib", "main"].contains(&stem) {
        parent
    } else {
        parent.join(stem)
    }
}

fn join(module: &str, name: &str) -> String {
    if module.is_empty() {
        name.to_string()
    } else {
        format!("{module}::{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut graph = Graph::default();
        for (from, to) in edges {
            for module in [from, to] {
                graph
                    .modules
                    .insert(module.to_string(), PathBuf::from(format!("{module}.rs")));
            }
            (graph.edges.entry(from.to_string()).or_default())
                .entry(to.to_string())
                .or_default()
                .insert("X".into());
        }
        graph
    }

    #[test]
    fn a_circle_is_found_and_a_line_is_not() {
        assert!(graph(&[("a", "b"), ("b", "c")]).cycles().is_empty());
        let cycles = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]).cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].len(), 3);
    }

    #[test]
    fn paths_resolve_to_the_deepest_module_they_name() {
        let mut graph = graph(&[]);
        for module in ["host", "host::run", "store", "sys", "sys::time"] {
            graph.modules.insert(module.into(), PathBuf::new());
        }
        let path = |text: &str| text.split("::").map(String::from).collect::<Vec<_>>();
        assert_eq!(
            graph.resolve("host::run", &path("super::Host")),
            Some(("host".into(), "Host".into()))
        );
        assert_eq!(
            graph.resolve("host", &path("crate::sys::time::now")),
            Some(("sys::time".into(), "now".into()))
        );
        assert_eq!(
            graph.resolve("store", &path("self::traffic::Counters")),
            Some(("store".into(), "traffic".into()))
        );
        assert_eq!(graph.resolve("store", &path("serde::Serialize")), None);
        assert_eq!(
            graph.resolve("sys", &path("time::now")),
            Some(("sys::time".into(), "now".into()))
        );
    }

    #[test]
    fn groups_tie_only_across_top_level_modules() {
        let files = graph(&[
            ("host::run", "host"),
            ("host", "store"),
            ("store", "host::run"),
        ]);
        let groups = files.grouped();
        assert_eq!(groups.cycles().len(), 1);
        let inside = graph(&[("host::run", "host"), ("host", "store")]).grouped();
        assert!(inside.cycles().is_empty());
    }
}
