//! Ports without races: a node binds what it is given (port 0 included) and reports what it got in
//! `<data_dir>/listen.json`; a harness's `PortReservation` keeps a roster port for a node.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kms_tests::{init, write_config, Node, PortReservation};

const BIN: &str = env!("CARGO_BIN_EXE_kms-node");

/// Polls until `f` returns `Some`, or fails after `timeout` with `what` and the node's log.
fn wait_for<T>(node: &mut Node, timeout: Duration, what: &str, mut f: impl FnMut(&Node) -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f(node) {
            return v;
        }
        if let Some(status) = node.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("kms-node exited ({status}) before {what}\n{}", node.log());
        }
        assert!(Instant::now() < deadline, "no {what} within {timeout:?}\n{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_node_on_port_0_reports_the_ports_it_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node1");
    std::fs::create_dir_all(&dir).unwrap();
    let peer = init(Path::new(BIN), &dir.join("data"));
    let mut node = Node {
        index: 1,
        config: dir.join("node.toml"),
        dir,
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        child: None,
        bin: PathBuf::from(BIN),
        env: Vec::new(),
        ports: Vec::new(),
    };
    // A one-node cluster listening on port 0 for HTTP and p2p.
    write_config(&node, 1, 1, &[(1, peer, 0, 0)], 0);
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    assert!(cfg.contains("listen_http = \"127.0.0.1:0\"") && cfg.contains("/ip4/127.0.0.1/tcp/0\""), "{cfg}");
    node.start();

    let listen_file = node.dir.join("data/listen.json");
    let listen: serde_json::Value = wait_for(&mut node, Duration::from_secs(60), "listen.json", |_| {
        // Written atomically: once it exists, it is complete.
        std::fs::read(&listen_file).ok().map(|b| serde_json::from_slice(&b).unwrap())
    });
    let http: SocketAddr = listen["http"].as_str().unwrap().parse().unwrap();
    let p2p = listen["p2p"].as_str().unwrap();
    assert_eq!(http.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_ne!(http.port(), 0, "{listen}");
    let p2p_port: u16 = p2p
        .strip_prefix("/ip4/127.0.0.1/tcp/")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{p2p}"));
    assert_ne!(p2p_port, 0, "{listen}");
    assert_eq!(listen.as_object().unwrap().len(), 2, "{listen}");

    // The HTTP API answers on the reported port, and the p2p port accepts connections.
    node.http = http;
    let (status, body) = wait_for(&mut node, Duration::from_secs(30), "answer on /v1/health", |n| {
        Some(n.get("/v1/health")).filter(|(status, _)| *status != 0)
    });
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["node_index"], 1, "{health}");
    TcpStream::connect(("127.0.0.1", p2p_port)).expect("p2p port listening");
    let log = node.log();
    assert!(log.contains(&format!("addr={http}")), "HTTP address not logged\n{log}");
    assert!(log.contains(p2p), "p2p address not logged\n{log}");
}

#[test]
fn a_reserved_port_is_bound_only_by_reuse_port_listeners() {
    let r = PortReservation::new();
    assert_ne!(r.port(), 0);
    // Nobody listens yet: connections are refused, not accepted by the reservation.
    assert!(TcpStream::connect(r.addr()).is_err());
    // A plain socket cannot take the port.
    let err = TcpListener::bind(r.addr()).expect_err("a plain bind must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);

    // A listener with SO_REUSEADDR + SO_REUSEPORT (as a node binds) can, and gets the connections.
    for round in 0..2u8 {
        let listener = r.listen().unwrap();
        let mut client = TcpStream::connect(r.addr()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(&[round]).unwrap();
        let mut got = [0u8; 1];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, [round]);
        assert_eq!(TcpListener::bind(r.addr()).unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
        // Closing it (as a node killed with -9) leaves the port reserved, ready for a restart.
        drop((listener, server, client));
        assert!(TcpStream::connect(r.addr()).is_err());
        assert_eq!(TcpListener::bind(r.addr()).unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
    }
}
