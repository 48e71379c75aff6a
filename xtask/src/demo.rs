//! `cargo xtask demo`: hostnetd's main job on this host, end to end, with real containers.
//!
//! web1 serves a page on an owned port in host network mode; a second web server for the same
//! port is refused before it starts; a host process cannot take the port; a container cannot
//! bind a port it did not declare. Everything is removed at the end.
use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{build::build, setup::setup};

const PORT: u16 = 20080;

pub fn demo() -> anyhow::Result<()> {
    setup()?;
    let hostnetd = build()?.join("debug/hostnetd");
    let site = site_dir()?;
    let port = PORT.to_string();
    // The container's /tmp is its own, so the page comes in through a read-only volume.
    let volume = format!("{}:/srv/site:ro", site.display());
    let web1 = step(
        "hostnetd run --name web1 --ports 20080/tcp --rootfs / -v SITE:/srv/site:ro -- busybox httpd ...",
        || {
            spawn(
                &hostnetd,
                &[
                    "run",
                    "--rm",
                    "--name",
                    "web1",
                    "--ports",
                    "20080/tcp",
                    "--rootfs",
                    "/",
                    "-v",
                    &volume,
                    "--",
                    "busybox",
                    "httpd",
                    "-f",
                    "-p",
                    &port,
                    "-h",
                    "/srv/site",
                ],
            )
        },
    )?;
    let result = show_ownership(&hostnetd);
    let _ = Command::new(&hostnetd)
        .args(["rm", "--force", "web1"])
        .status();
    let _ = web1.wait_with_output();
    let _ = Command::new(&hostnetd).arg("teardown").status();
    let _ = std::fs::remove_dir_all(&site);
    result
}

fn show_ownership(hostnetd: &Path) -> anyhow::Result<()> {
    let page = wait_for_page(PORT)?;
    println!(
        "    GET http://127.0.0.1:{PORT}/ -> {}",
        page.lines().last().unwrap_or("")
    );
    step("hostnetd ports", || exec(hostnetd, &["ports"]))?;
    step(
        "hostnetd run --name web2 --ports 20080/tcp ... (a second web server, same port)",
        || {
            exec(
                hostnetd,
                &[
                    "run",
                    "--rm",
                    "--name",
                    "web2",
                    "--ports",
                    "20080/tcp",
                    "--rootfs",
                    "/",
                    "--",
                    "true",
                ],
            )
        },
    )?;
    step("a host process binds 0.0.0.0:20080", || {
        match TcpListener::bind(("0.0.0.0", PORT)) {
            Ok(_) => bail!("the host process took a port web1 owns"),
            Err(error) => println!("    refused: {error}"),
        }
        Ok(())
    })?;
    step(
        "hostnetd run --ports 20081 ... busybox nc -l -p 20082 (an undeclared port)",
        || {
            exec(
                hostnetd,
                &[
                    "run", "--rm", "--ports", "20081", "--rootfs", "/", "--", "busybox", "nc",
                    "-l", "-p", "20082",
                ],
            )
        },
    )
}

fn step<T>(title: &str, action: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    println!("\n$ {title}");
    action()
}

fn spawn(hostnetd: &Path, args: &[&str]) -> anyhow::Result<Child> {
    Command::new(hostnetd)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .context("starting hostnetd")
}

fn exec(hostnetd: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(hostnetd)
        .args(args)
        .output()
        .context("running hostnetd")?;
    print!("{}", indent(&output.stdout));
    print!("{}", indent(&output.stderr));
    println!("    (exit {})", output.status.code().unwrap_or(-1));
    Ok(())
}

fn indent(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect()
}

fn site_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join("hostnetd-demo-site");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("index.html"),
        "hello from web1, a host-network container\n",
    )?;
    Ok(dir)
}

fn wait_for_page(port: u16) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match get(port) {
            Ok(page) => return Ok(page),
            Err(error) if Instant::now() > deadline => {
                return Err(error).context("web1 never answered")
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn get(port: u16) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut page = String::new();
    stream.read_to_string(&mut page)?;
    Ok(page)
}
