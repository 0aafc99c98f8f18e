//! The bench kit in network namespaces (root): the generator's frames reach
//! the server as sent even when the receiver rewrites them in place, and
//! the client-side sink drops answers to spoofed sources only.

mod common;

use common::Testbed;

#[test]
fn frames_arrive_as_sent_behind_a_receiver_that_rewrites_them() {
    if !common::require_root() {
        return;
    }
    let tb = Testbed::new(1);
    let sink = tb.sink();
    // The reflector rewrites every SYN into a SYN-ACK in place and sends
    // it back: with veth passing frames by reference and the generator
    // recycling its pages, the generator's next frames are made from those
    // pages.
    let reflect = tb.limit("reflect");
    let sent = tb.flood(common::SERVER4, "syn", "20000")["sent"]
        .as_u64()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = reflect.finish();
    let s = sink.finish();
    assert_eq!(sent, 20_000);
    assert_eq!(
        r["altered"], 0,
        "every frame arrived as the generator's SYN: {r}"
    );
    let as_sent = r["as_sent"].as_u64().unwrap();
    assert!(as_sent >= sent * 95 / 100, "{r}");
    // Every reflected SYN-ACK went to a spoofed source and died in the sink.
    assert_eq!(s["dropped"], as_sent, "{s}");
}

#[test]
fn the_sink_keeps_the_clients_own_traffic() {
    if !common::require_root() {
        return;
    }
    let tb = Testbed::new(1);
    let sink = tb.sink();
    // A real connection from the client namespace to a server in the other
    // one, over IPv4 and IPv6, through the sink.
    let mut listener = tb
        .in_srv(&[
            "python3",
            "-c",
            "import socket\nls = []\nfor fam, a in ((socket.AF_INET, '198.18.0.1'), (socket.AF_INET6, '2001:2::1')):\n s = socket.socket(fam); s.bind((a, 7000)); s.listen(); s.settimeout(10); ls.append(s)\nprint('ready', flush=True)\nfor s in ls:\n c, _ = s.accept(); c.sendall(b'ok'); c.close()",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(listener.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    for addr in ["198.18.0.1", "2001:2::1"] {
        let out = common::run_ok(
            &mut tb.in_cli(&[
                "python3",
                "-c",
                &format!(
                    "import socket; s = socket.create_connection(('{addr}', 7000), 5); print(s.recv(2).decode())"
                ),
            ]),
            "client",
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok", "{addr}");
    }
    let _ = listener.wait();
    let s = sink.finish();
    assert_eq!(s["dropped"], 0, "{s}");
    assert!(s["passed"].as_u64().unwrap() >= 4, "{s}");
}
