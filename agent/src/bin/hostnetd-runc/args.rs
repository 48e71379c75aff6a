//! runc's command line as an engine gives it: `[GLOBAL FLAGS] COMMAND [FLAGS] ID`, with
//! hostnetd-runc's own `--hostnetd-config FILE` taken out wherever it stands (Docker's
//! `runtimeArgs` put it first).
use std::{ffi::OsString, path::PathBuf};

/// runc's global flags that take a value (runc 1.1 and 1.2); the others are switches.
const GLOBAL_VALUE_FLAGS: [&str; 5] = ["--log", "--log-format", "--root", "--criu", "--rootless"];
/// `runc create`'s flags that take a value.
const CREATE_VALUE_FLAGS: [&str; 6] = [
    "--bundle",
    "-b",
    "--console-socket",
    "--pid-file",
    "--preserve-fds",
    "--pidfd-socket",
];
pub const CONFIG_FLAG: &str = "--hostnetd-config";

/// One call of the runtime.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RuncCall {
    /// hostnetd's config file, when the engine's registration names one.
    pub config: Option<PathBuf>,
    /// runc's own global flags, as given: repeated for the calls hostnetd-runc makes itself.
    pub globals: Vec<OsString>,
    /// `create`, `start`, `delete`...; None for `--version` and the like.
    pub command: Option<String>,
    /// What follows the command, as given.
    pub command_args: Vec<OsString>,
}

impl RuncCall {
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let mut call = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let text = arg.to_string_lossy().into_owned();
            if let Some(value) = text.strip_prefix(CONFIG_FLAG) {
                call.config = Some(match value.strip_prefix('=') {
                    Some(path) => PathBuf::from(path),
                    None if value.is_empty() => PathBuf::from(args.next().ok_or_else(|| {
                        format!(
                            "{CONFIG_FLAG} needs a file: {CONFIG_FLAG} /etc/hostnetd/config.toml"
                        )
                    })?),
                    None => return Err(format!("unknown flag {text}")),
                });
                continue;
            }
            if call.command.is_some() {
                call.command_args.push(arg);
            } else if text.starts_with('-') {
                let takes_value = GLOBAL_VALUE_FLAGS.contains(&text.as_str());
                call.globals.push(arg);
                if takes_value {
                    call.globals.extend(args.next());
                }
            } else {
                call.command = Some(text);
            }
        }
        Ok(call)
    }

    /// All of runc's arguments, as given (without hostnetd-runc's own).
    pub fn runc_args(&self) -> Vec<OsString> {
        let mut args = self.globals.clone();
        args.extend(self.command.iter().map(OsString::from));
        args.extend(self.command_args.iter().cloned());
        args
    }

    /// The value of runc's global flag `name` (`--log`), in either form.
    pub fn global(&self, name: &str) -> Option<String> {
        flag_value(&self.globals, name)
    }

    /// `create`'s bundle, pid file and container ID.
    pub fn create(&self) -> Result<CreateArgs, String> {
        let mut bundle = None;
        let mut pid_file = None;
        let mut id = None;
        let mut args = self
            .command_args
            .iter()
            .map(|a| a.to_string_lossy().into_owned());
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with('-') => {
                    (name.to_string(), Some(value.to_string()))
                }
                _ => (arg.clone(), None),
            };
            if !name.starts_with('-') {
                id.get_or_insert(arg);
                continue;
            }
            if !CREATE_VALUE_FLAGS.contains(&name.as_str()) {
                continue;
            }
            let value = match inline {
                Some(value) => value,
                None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
            };
            match name.as_str() {
                "--bundle" | "-b" => bundle = Some(PathBuf::from(value)),
                "--pid-file" => pid_file = Some(PathBuf::from(value)),
                _ => {}
            }
        }
        Ok(CreateArgs {
            bundle: bundle.unwrap_or_else(|| PathBuf::from(".")),
            pid_file,
            id: id.ok_or("create: no container ID given")?,
        })
    }

    /// The container ID `delete`, `state` and the like act on: their last argument.
    pub fn last_id(&self) -> Option<String> {
        let last = self.command_args.last()?.to_string_lossy().into_owned();
        (!last.starts_with('-')).then_some(last)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct CreateArgs {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub id: String,
}

fn flag_value(args: &[OsString], name: &str) -> Option<String> {
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if arg == name {
            return args.next();
        }
        if let Some(value) = arg
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
        {
            return Some(value.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &str) -> RuncCall {
        RuncCall::parse(args.split_whitespace().map(OsString::from)).unwrap()
    }

    #[test]
    fn dockers_create_is_read_and_passed_on_whole() {
        let line =
            "--hostnetd-config /etc/h.toml --root /run/r --log /b/log.json --log-format json \
                    create --bundle /b --pid-file /b/init.pid abc";
        let call = call(line);
        assert_eq!(call.config, Some(PathBuf::from("/etc/h.toml")));
        assert_eq!(call.command.as_deref(), Some("create"));
        assert_eq!(call.global("--log").as_deref(), Some("/b/log.json"));
        assert_eq!(call.global("--root").as_deref(), Some("/run/r"));
        let create = call.create().unwrap();
        assert_eq!(create.bundle, PathBuf::from("/b"));
        assert_eq!(create.pid_file, Some(PathBuf::from("/b/init.pid")));
        assert_eq!(create.id, "abc");
        let passed: Vec<String> = (call.runc_args().iter())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            passed.join(" "),
            line.split_once("toml ")
                .unwrap()
                .1
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        );
    }

    #[test]
    fn flags_in_either_form_and_switches_do_not_hide_the_command() {
        let call = call(
            "--debug --systemd-cgroup --root=/r --hostnetd-config=/c create -b=/b --no-pivot id1",
        );
        assert_eq!(call.config, Some(PathBuf::from("/c")));
        assert_eq!(call.global("--root").as_deref(), Some("/r"));
        let create = call.create().unwrap();
        assert_eq!(
            (create.bundle, create.id),
            (PathBuf::from("/b"), "id1".to_string())
        );
        assert_eq!(create.pid_file, None);
    }

    #[test]
    fn delete_names_its_container() {
        let call = call("--root /r delete --force abc");
        assert_eq!(call.last_id().as_deref(), Some("abc"));
        assert_eq!(RuncCall::parse(["--version".into()]).unwrap().command, None);
        assert!(RuncCall::parse(["--hostnetd-config".into()]).is_err());
        assert!(call_create_without_id().is_err());
    }

    fn call_create_without_id() -> Result<CreateArgs, String> {
        call("create --bundle /b").create()
    }
}
