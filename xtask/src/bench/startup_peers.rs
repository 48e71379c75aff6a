//! Start-up beside the engines people would otherwise use: `hostnetd run -d` of the busybox
//! sample image (owning one port), `docker run -d --network host` of the same image on a
//! private dockerd (Debian's Engine 20.10, runc), and `podman run -d --network host` (Debian's
//! podman 4.3, runc). Each round starts one container with each, in an order that rotates by
//! round; each start is timed from the command to its return, and the container removed
//! before the next (not timed).
use std::time::Instant;

use anyhow::bail;
use hostnetd_tests::engines::{TestDocker, TestPodman};

use super::{
    env::Env,
    plan::{check_interrupted, Plan},
};
use crate::shell::say;

const DOCKER_IMAGE: &str = "hostnetd-bench/busybox:latest";
/// What `podman load` names the OCI archive's image.
const PODMAN_IMAGE: &str = "localhost/busybox:latest";
/// What `hostnetd load` names it.
const HOSTNETD_IMAGE: &str = "busybox";

/// Milliseconds per start, one sample per round each.
#[derive(Default)]
pub struct StartupPeers {
    pub hostnetd_ms: Vec<f64>,
    pub docker_ms: Vec<f64>,
    pub podman_ms: Vec<f64>,
}

#[derive(Clone, Copy)]
enum Engine {
    Hostnetd,
    Docker,
    Podman,
}

pub fn measure(env: &Env, plan: &Plan) -> anyhow::Result<StartupPeers> {
    let busybox = env.images.join("busybox.tar");
    let archive = busybox.display().to_string();
    if !env.host.exec(&["images"])?.contains(HOSTNETD_IMAGE) {
        env.host.exec(&["load", "-i", &archive])?;
    }
    let docker = TestDocker::start_for(env.host.scratch_host(), false);
    docker.load_sample("busybox.tar", DOCKER_IMAGE);
    let podman = TestPodman::new_for(env.host.scratch_host());
    podman.ok(&["load", "-i", &archive]);
    let start = |engine| start_and_remove(env, &docker, &podman, engine);
    let engines = [Engine::Hostnetd, Engine::Docker, Engine::Podman];
    // Warm-up: image layers, runc, hostnetd's first admission.
    for engine in engines {
        start(engine)?;
    }
    let mut peers = StartupPeers::default();
    for round in 0..plan.peer_rounds {
        check_interrupted()?;
        if round % 5 == 0 {
            say(&format!(
                "start-up peers: round {} of {}",
                round + 1,
                plan.peer_rounds
            ));
        }
        for offset in 0..engines.len() {
            let engine = engines[(round + offset) % engines.len()];
            let ms = start(engine)?;
            match engine {
                Engine::Hostnetd => peers.hostnetd_ms.push(ms),
                Engine::Docker => peers.docker_ms.push(ms),
                Engine::Podman => peers.podman_ms.push(ms),
            }
        }
    }
    Ok(peers)
}

/// Milliseconds one `run -d` took to return; the container is then removed.
fn start_and_remove(
    env: &Env,
    docker: &TestDocker,
    podman: &TestPodman,
    engine: Engine,
) -> anyhow::Result<f64> {
    let command = ["sleep", "600"];
    let started = Instant::now();
    let (output, what) = match engine {
        Engine::Hostnetd => {
            let owned = format!("{}/tcp", env.ports.engine_port());
            let args = [
                &["run", "-d", "--name", "hnbench-peer", "--ports", &owned][..],
                &[HOSTNETD_IMAGE],
                &command,
            ]
            .concat();
            (env.host.output(&args)?, "hostnetd run -d")
        }
        Engine::Docker => (
            docker.docker(
                &[
                    &["run", "-d", "--network", "host", DOCKER_IMAGE][..],
                    &command,
                ]
                .concat(),
            ),
            "docker run -d",
        ),
        Engine::Podman => (
            podman.run_detached_plain(&[&[PODMAN_IMAGE][..], &command].concat()),
            "podman run -d",
        ),
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !output.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
    match engine {
        Engine::Hostnetd => env.host.exec(&["rm", "-f", "hnbench-peer"]).map(drop)?,
        Engine::Docker => drop(docker.ok(&["rm", "-f", &id])),
        Engine::Podman => drop(podman.ok(&["rm", "-f", "--time", "0", &id])),
    }
    Ok(ms)
}
