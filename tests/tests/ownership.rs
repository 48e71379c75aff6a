//! Port ownership enforced in the kernel: binds inside and outside containers, with the errno
//! (hostnetd's own where the kernel lets its programs choose it, else EPERM: see `refused`).
use hostnetd_tests::*;

const OK: i32 = 0;

fn probe_in_container(host: &TestHost, ports: &str, probes: &[&str]) -> Vec<i32> {
    let probe = netprobe();
    let mut command = vec![probe.as_str(), "bind"];
    command.extend(probes);
    let output = host.run_to_end(ports, &[], &command);
    assert!(output.status.success(), "{}", describe(&output));
    probe_results(&output)
}

#[test]
fn declared_ports_bind_and_undeclared_ports_fail_with_eacces() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let results = probe_in_container(
        &host,
        "20100/tcp,20101/udp",
        &[
            "tcp",
            "0.0.0.0",
            "20100", // declared tcp
            "udp",
            "0.0.0.0",
            "20101", // declared udp
            "tcp",
            "0.0.0.0",
            "20102", // undeclared
            "udp",
            "0.0.0.0",
            "20100", // declared for tcp only
            "tcp",
            "127.0.0.1",
            "20101", // declared for udp only
            "tcp",
            "0.0.0.0",
            "0", // ephemeral
            "udp",
            "0.0.0.0",
            "0",
        ],
    );
    assert_eq!(results, vec![OK, OK, denied(), denied(), denied(), OK, OK]);
    host.assert_no_container_left();
}

#[test]
fn ipv6_v4_mapped_and_dual_stack_binds_are_covered() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let results = probe_in_container(
        &host,
        "20110,20111/udp",
        &[
            "tcp",
            "::1",
            "20110", //
            "tcp",
            "::",
            "20110",
            "dualstack", //
            "tcp",
            "::ffff:127.0.0.1",
            "20110", //
            "udp",
            "::",
            "20111",
            "dualstack", //
            "tcp",
            "::1",
            "20112", //
            "tcp",
            "::",
            "20112",
            "dualstack", //
            "tcp",
            "::ffff:127.0.0.1",
            "20112", //
            "udp",
            "::ffff:127.0.0.1",
            "20112", //
            "tcp",
            "::",
            "0",
            "dualstack",
        ],
    );
    assert_eq!(
        results,
        vec![OK, OK, OK, OK, denied(), denied(), denied(), denied(), OK]
    );
}

#[test]
fn address_restricted_declaration_allows_only_that_address() {
    if skip_unless_root() {
        return;
    }
    let host = TestHost::new();
    let results = probe_in_container(
        &host,
        "127.0.0.1:20120/tcp,[::1]:20121/udp",
        &[
            "tcp",
            "127.0.0.1",
            "20120", //
            "tcp",
            "::ffff:127.0.0.1",
            "20120", //
            "tcp",
            "0.0.0.0",
            "20120", //
            "tcp",
            "127.0.0.2",
            "20120", //
            "tcp",
            "::",
            "20120",
            "dualstack", //
            "udp",
            "::1",
            "20121", //
            "udp",
            "::",
            "20121", //
            "udp",
            "127.0.0.1",
            "20121",
        ],
    );
    assert_eq!(
        results,
        vec![OK, OK, denied(), denied(), denied(), OK, denied(), denied()]
    );
}

#[test]
fn a_port_owned_by_another_container_fails_with_eaddrinuse() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    let owner = host.start("db", "20130/tcp,20131/udp", &[&probe, "sleep", "60"]);
    let results = probe_in_container(
        &host,
        "20132",
        &[
            "tcp",
            "0.0.0.0",
            "20130", //
            "tcp",
            "::",
            "20130",
            "dualstack", //
            "tcp",
            "0.0.0.0",
            "20130",
            "reuseport", //
            "udp",
            "0.0.0.0",
            "20131", //
            "tcp",
            "0.0.0.0",
            "20132",
        ],
    );
    assert_eq!(results, vec![taken(), taken(), taken(), taken(), OK]);
    host.stop(owner);
    host.assert_no_container_left();
}

#[test]
fn host_processes_cannot_bind_owned_ports_even_with_reuseport() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    let owner = host.start("web", "20140/tcp,20141/udp", &[&probe, "sleep", "60"]);
    let results = probe_on_host(&[
        "tcp",
        "0.0.0.0",
        "20140", //
        "tcp",
        "0.0.0.0",
        "20140",
        "reuseport", //
        "tcp",
        "::",
        "20140",
        "dualstack",
        "reuseport", //
        "tcp",
        "127.0.0.1",
        "20140", //
        "udp",
        "0.0.0.0",
        "20141",
        "reuseport", //
        "udp",
        "::1",
        "20141", //
        "udp",
        "0.0.0.0",
        "20140", // not owned for udp
        "tcp",
        "0.0.0.0",
        "20142", // owned by nobody
    ]);
    assert_eq!(
        results,
        vec![taken(), taken(), taken(), taken(), taken(), taken(), OK, OK]
    );
    // Ports are owned in the host's network namespace: one of its own is another port space.
    let in_own_netns = std::thread::spawn(|| {
        // SAFETY: moves only this new thread into a new network namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
        let tcp = std::net::TcpListener::bind(("0.0.0.0", 20140)).map(drop);
        let udp = std::net::UdpSocket::bind(("0.0.0.0", 20141)).map(drop);
        (
            tcp.map_err(|e| e.to_string()),
            udp.map_err(|e| e.to_string()),
        )
    });
    assert_eq!(in_own_netns.join().unwrap(), (Ok(()), Ok(())));
    host.stop(owner);
    let after = probe_on_host(&["tcp", "0.0.0.0", "20140", "udp", "0.0.0.0", "20141"]);
    assert_eq!(
        after,
        vec![OK, OK],
        "ports stay blocked after the owner exited"
    );
    host.assert_no_container_left();
}

#[test]
fn the_owner_serves_real_traffic_on_its_port() {
    if skip_unless_root() {
        return;
    }
    let mut host = TestHost::new();
    let probe = netprobe();
    let web = host.start(
        "web1",
        "20150/tcp",
        &[&probe, "listen", "0.0.0.0", "20150", "60"],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let body = loop {
        match fetch(20150) {
            Ok(body) => break body,
            Err(error) if std::time::Instant::now() > deadline => panic!("no answer: {error}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    assert_eq!(body, "hello from the container\n");
    host.stop(web);
}
