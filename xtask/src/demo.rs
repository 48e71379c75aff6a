//! `cargo xtask demo`: hostnetd's main job on this host, end to end, with real containers.
//!
//! The sample nginx image (built offline from Debian packages) is loaded and run with
//! `hostnetd run --ports 80 nginx` (port 20080 when 80 is taken); it serves its page in host
//! network mode. A second nginx for the same port is refused before it starts, a host process
//! cannot take the port, and a container cannot bind a port it did not declare. The
//! containers are removed at the end; the images stay stored (`hostnetd images`).
use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::{build::build_release, images::build_images, setup::setup};

const FALLBACK_PORT: u16 = 20080;

pub fn demo() -> anyhow::Result<()> {
    setup()?;
    // As it ships: the demo shows hostnetd's speed too (start-up, serving).
    let hostnetd = build_release()?.join("hostnetd");
    let images = build_images()?;
    for archive in ["nginx.tar", "busybox.tar"] {
        let archive = images.join(archive).display().to_string();
        step(&format!("hostnetd load -i {archive}"), || {
            exec(&hostnetd, &["load", "-i", &archive])
        })?;
    }
    let port = if port_is_free(80) { 80 } else { FALLBACK_PORT };
    let result = show_ownership(&hostnetd, port);
    for name in ["web1", "web2", "sneaky"] {
        let _ = Command::new(&hostnetd)
            .args(["rm", "--force", name])
            .output();
    }
    let _ = Command::new(&hostnetd).arg("teardown").status();
    result
}

fn show_ownership(hostnetd: &Path, port: u16) -> anyhow::Result<()> {
    let ports = port.to_string();
    let listen = format!("NGINX_PORT={port}");
    let mut run = vec!["run", "-d", "--name", "web1", "--ports", &ports];
    if port != 80 {
        println!("\n(port 80 is taken on this host: nginx listens on {port} instead)");
        run.extend(["-e", &listen]);
    }
    run.push("nginx");
    step(&format!("hostnetd {}", run.join(" ")), || {
        exec(hostnetd, &run)
    })?;
    let page = wait_for_page(port)?;
    println!(
        "    GET http://127.0.0.1:{port}/ -> {}",
        page.lines().last().unwrap_or("")
    );
    step("hostnetd ps", || exec(hostnetd, &["ps"]))?;
    step("hostnetd ports", || exec(hostnetd, &["ports"]))?;
    let mut second = vec!["run", "--rm", "--name", "web2", "--ports", &ports];
    if port != 80 {
        second.extend(["-e", &listen]);
    }
    second.push("nginx");
    step(
        &format!(
            "hostnetd {} (a second web server, same port)",
            second.join(" ")
        ),
        || exec(hostnetd, &second),
    )?;
    step(&format!("a host process binds 0.0.0.0:{port}"), || {
        match TcpListener::bind(("0.0.0.0", port)) {
            Ok(_) => bail!("the host process took a port web1 owns"),
            Err(error) => println!("    refused: {error}"),
        }
        Ok(())
    })?;
    step(
        "hostnetd run --rm --name sneaky --ports 20081 busybox nc -l -p 20082 (an undeclared port)",
        || {
            exec(
                hostnetd,
                &[
                    "run", "--rm", "--name", "sneaky", "--ports", "20081", "busybox", "nc", "-l",
                    "-p", "20082",
                ],
            )
        },
    )?;
    step("hostnetd logs web1", || exec(hostnetd, &["logs", "web1"]))
}

/// Whether nothing on the host listens on `port` (v4 or v6) right now.
fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok() && TcpListener::bind(("::", port)).is_ok()
}

fn step<T>(title: &str, action: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    println!("\n$ {title}");
    action()
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

fn wait_for_page(port: u16) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match get(port) {
            Ok(page) => return Ok(page),
            Err(error) if Instant::now() > deadline => {
                return Err(error).context("nginx never answered")
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
