//! What hostnetd-runc adds to `docker run -d`: a private dockerd (the e2e tests' harness) runs
//! the busybox sample image on the host network with runc, and with hostnetd-runc declaring a
//! port, alternately (A B A B, the first of each pair rotating by round); each start is timed
//! from the command to its return, and the container removed before the next.
use std::time::Instant;

use anyhow::bail;
use hostnetd_tests::engines::TestDocker;

use super::{
    env::Env,
    plan::{check_interrupted, Plan},
};
use crate::shell::say;

const IMAGE: &str = "hostnetd-bench/busybox:latest";

/// Milliseconds per `docker run -d`, each way.
#[derive(Default)]
pub struct EngineStartup {
    pub runc_ms: Vec<f64>,
    pub hostnetd_runc_ms: Vec<f64>,
}

pub fn measure(env: &Env, plan: &Plan) -> anyhow::Result<EngineStartup> {
    // The daemon runs as a service would, before the engine calls the runtime.
    env.host.exec(&["info"])?;
    let docker = TestDocker::start_for(env.host.scratch_host(), false);
    docker.load_sample("busybox.tar", IMAGE);
    let port = env.ports.engine_port().to_string();
    let declaration = format!("io.hostnetd.ports={port}");
    let runc = [
        "run",
        "-d",
        "--network",
        "host",
        "--runtime",
        "runc",
        IMAGE,
        "sleep",
        "600",
    ];
    let hostnetd_runc = [
        "run",
        "-d",
        "--network",
        "host",
        "--runtime",
        "hostnetd",
        "-l",
        &declaration,
        IMAGE,
        "sleep",
        "600",
    ];
    // Warm-up: image layers, runc, the daemon's first admission.
    time_start(&docker, &runc)?;
    time_start(&docker, &hostnetd_runc)?;
    let mut startup = EngineStartup::default();
    for round in 0..plan.engine_rounds {
        check_interrupted()?;
        if round % 10 == 0 {
            say(&format!(
                "engines: round {} of {}",
                round + 1,
                plan.engine_rounds
            ));
        }
        if round % 2 == 0 {
            startup.runc_ms.push(time_start(&docker, &runc)?);
            startup
                .hostnetd_runc_ms
                .push(time_start(&docker, &hostnetd_runc)?);
        } else {
            startup
                .hostnetd_runc_ms
                .push(time_start(&docker, &hostnetd_runc)?);
            startup.runc_ms.push(time_start(&docker, &runc)?);
        }
    }
    Ok(startup)
}

/// Milliseconds `docker ARGS` took to return; the container it started is then removed.
fn time_start(docker: &TestDocker, args: &[&str]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let output = docker.docker(args);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !output.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    docker.ok(&["rm", "-f", &id]);
    Ok(ms)
}
