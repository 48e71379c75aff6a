//! login and logout. The daemon pulls, so it checks and keeps the credentials (`POST /v1/auth`);
//! the client only gathers them: from the flags, one line of standard input, or the terminal
//! with echo off.
use std::{
    io::{BufRead as _, IsTerminal as _, Write as _},
    process::ExitCode,
};

use anyhow::Context as _;
use hostnetd::{
    api::{client::Client, AuthReply, LoginRequest},
    images::registry_name,
};

use super::images::path_encode;

#[derive(clap::Args)]
pub struct LoginArgs {
    /// The user name [default: asked on the terminal].
    #[arg(short, long)]
    username: Option<String>,
    /// The password: it shows in the process list and the shell's history, so prefer
    /// --password-stdin [default: asked on the terminal].
    #[arg(short, long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input (its first line).
    #[arg(long)]
    password_stdin: bool,
    /// Reach this registry (HOST[:PORT]) over plain HTTP; repeatable. For local registries.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// HOST[:PORT] [default: docker.io].
    registry: Option<String>,
}

/// The password stays out of any debug print.
impl std::fmt::Debug for LoginArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginArgs")
            .field("username", &self.username)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// The login request from the flags, standard input or the terminal; refused here, before
/// any daemon starts, when something is missing.
pub fn request(args: LoginArgs) -> anyhow::Result<LoginRequest> {
    let registry = registry_name(args.registry.as_deref().unwrap_or("docker.io"))?;
    let password_given = args.password.is_some();
    let password = match (args.password, args.password_stdin) {
        (Some(password), _) => Some(password),
        (None, true) => {
            anyhow::ensure!(
                args.username.is_some(),
                "--password-stdin needs --username: standard input carries the password"
            );
            Some(password_from_stdin()?)
        }
        (None, false) => None,
    };
    let username = match args.username {
        Some(username) => username,
        None => ask("Username: ")?,
    };
    anyhow::ensure!(!username.is_empty(), "no username: give -u USER");
    let password = match password {
        Some(password) => password,
        None => ask_hidden("Password: ")?,
    };
    anyhow::ensure!(
        !password.is_empty(),
        "empty password: give the password (--password-stdin reads it from standard input)"
    );
    if password_given {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    Ok(LoginRequest {
        registry,
        username,
        password,
        insecure_registries: args.insecure_registries,
    })
}

pub fn login(client: &Client, request: &LoginRequest) -> anyhow::Result<ExitCode> {
    let reply: AuthReply = client.post("/v1/auth", Some(request))?;
    println!("{}", reply.status);
    Ok(ExitCode::SUCCESS)
}

/// The first line of standard input, without its line ending.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(
        !password.is_empty(),
        "no password on standard input: pipe it in, as `hostnetd login -u USER --password-stdin REGISTRY < FILE`"
    );
    Ok(password)
}

/// A line typed on the terminal after `prompt`.
fn ask(prompt: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "no username: give -u USER (standard input is not a terminal to ask on)"
    );
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

/// A line typed on the terminal after `prompt`, not echoed.
fn ask_hidden(prompt: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "no password: give --password-stdin and pipe it in (standard input is not a terminal to ask on)"
    );
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let echo = EchoOff::new();
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    drop(echo);
    eprintln!();
    read.context("cannot read the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// The terminal's echo turned off until dropped.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> Self {
        // SAFETY: tcgetattr fills a termios we own, for standard input.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Self(None);
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: as above, setting attributes we read.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) };
        Self(Some(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restoring the attributes read in new().
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved) };
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// HOST[:PORT] [default: docker.io].
    registry: Option<String>,
}

impl LogoutArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        registry_name(self.registry())?;
        Ok(())
    }

    fn registry(&self) -> &str {
        self.registry.as_deref().unwrap_or("docker.io")
    }
}

/// As docker's: forgetting credentials that were never stored is no error, but said.
pub fn logout(client: &Client, args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let registry = registry_name(args.registry())?;
    let reply: AuthReply = client.delete(&format!("/v1/auth/{}", path_encode(&registry)))?;
    match reply.status.as_str() {
        "Removed" => println!("Removing login credentials for {}", reply.registry),
        _ => println!("Not logged in to {}", reply.registry),
    }
    Ok(ExitCode::SUCCESS)
}
