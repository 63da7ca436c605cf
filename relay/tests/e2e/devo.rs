//! Issue 4, test 1: the `devo` output over mutual TLS to a real TLS server in the test
//! (certificates generated here with rcgen, client certificate required). Lines arrive byte
//! for byte; a wrong client certificate, an untrusted server certificate and a name mismatch
//! each fail with an error that says which; `verify_hostname = false` forgives only the name.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::*;

fn devo_output(port: u16, host: &str, pki: &Pki, client: Option<&Pki>, extra: &str) -> String {
    let client = client.unwrap_or(pki);
    format!(
        "[[outputs]]\ntype = \"devo\"\nhostname = \"testhost\"\ndevo_address = \"{host}:{port}\"\n\
         chain_filename = \"{}\"\ncert_filename = \"{}\"\nkey_filename = \"{}\"\n\
         backoff_initial_ms = 50\nbackoff_max_ms = 500\n{extra}\n",
        path_str(&pki.chain),
        path_str(&client.client_cert),
        path_str(&client.client_key),
    )
}

fn server_tls(server: &Pki, clients_of: &Pki) -> ServerTls {
    ServerTls {
        cert: server.server_cert.clone(),
        key: server.server_key.clone(),
        client_ca: clients_of.chain.clone(),
    }
}

fn wait_stderr(relay: &Relay, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = relay.stderr_text();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "stderr never said {needle:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn mutual_tls_lines_arrive_byte_exact() {
    let (_d, dir) = tmp();
    let pki =
        Pki::generate(&dir, "", "logtrustCA", &["localhost", "127.0.0.1"]).expect("certificates");
    let receiver = Receiver::start("127.0.0.1:0", Some(server_tls(&pki, &pki)));
    let relay = start(
        &dir,
        &spool_config(
            &dir.join("spool"),
            "",
            &devo_output(receiver.port(), "localhost", &pki, None, ""),
        ),
    );
    let client = relay.client(None);
    let first = [
        (
            "cloud.aws.cloudtrail.events",
            r#"{"eventVersion":"1.08","x":"ü"}"#,
        ),
        ("my.app.test.rust", "hello world"),
    ];
    client.send("d-1", &batch(&first)).await.unwrap();
    client
        .send(
            "d-2",
            &batch(&[(
                "web.aws.alb.access",
                "h2 2024-01-01T00:00:00Z app/x 1.2.3.4:5 -",
            )]),
        )
        .await
        .unwrap();
    let lines = receiver.wait_lines(3, Duration::from_secs(20));
    assert_eq!(lines.len(), 3);
    assert_devo_line(&lines[0], "14", "testhost", first[0].0, first[0].1);
    assert_devo_line(&lines[1], "14", "testhost", first[1].0, first[1].1);
    assert_devo_line(
        &lines[2],
        "14",
        "testhost",
        "web.aws.alb.access",
        "h2 2024-01-01T00:00:00Z app/x 1.2.3.4:5 -",
    );
    // SIGTERM closes gracefully: close_notify, half close, the server's EOF.
    assert!(relay.terminate().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while receiver.seen.clean_closes.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no clean close");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn wrong_client_certificate_is_named() {
    let (_d, dir) = tmp();
    let pki = Pki::generate(&dir, "", "logtrustCA", &["localhost"]).expect("certificates");
    let rogue = Pki::generate(&dir, "rogue-", "rogueCA", &["localhost"]).expect("certificates");
    let receiver = Receiver::start("127.0.0.1:0", Some(server_tls(&pki, &pki)));
    let relay = start(
        &dir,
        &spool_config(
            &dir.join("spool"),
            "",
            &devo_output(receiver.port(), "localhost", &pki, Some(&rogue), ""),
        ),
    );
    relay
        .client(None)
        .send("w-1", &batch(&[("my.app.x", "never delivered")]))
        .await
        .unwrap();
    let text = wait_stderr(&relay, "refused our client certificate");
    assert!(text.contains("TLS handshake with localhost:"), "{text}");
    assert!(receiver.lines().is_empty());
    // Counted around the log line, not necessarily before it: wait for it.
    wait_metric(
        &relay.address,
        "sluice_relay_output_errors_total{output=\"devo\",phase=\"handshake\"}",
        |v| v >= 1,
        Duration::from_secs(10),
    );
    assert!(relay.terminate().success());
}

#[tokio::test]
async fn untrusted_server_certificate_is_named() {
    let (_d, dir) = tmp();
    let pki = Pki::generate(&dir, "", "logtrustCA", &["localhost"]).expect("certificates");
    let rogue = Pki::generate(&dir, "rogue-", "rogueCA", &["localhost"]).expect("certificates");
    // The server shows a certificate of another CA; it would accept our client certificate.
    let receiver = Receiver::start("127.0.0.1:0", Some(server_tls(&rogue, &pki)));
    let relay = start(
        &dir,
        &spool_config(
            &dir.join("spool"),
            "",
            &devo_output(receiver.port(), "localhost", &pki, None, ""),
        ),
    );
    relay
        .client(None)
        .send("u-1", &batch(&[("my.app.x", "never delivered")]))
        .await
        .unwrap();
    let text = wait_stderr(&relay, "server certificate is not trusted");
    assert!(text.contains("chain_filename"), "{text}");
    assert!(receiver.lines().is_empty());
    assert!(relay.terminate().success());
}

#[tokio::test]
async fn hostname_check_and_its_switch() {
    let (_d, dir) = tmp();
    // The server's certificate names another host than the one the relay dials.
    let pki =
        Pki::generate(&dir, "", "logtrustCA", &["collector-eu.devo.io"]).expect("certificates");
    let receiver = Receiver::start("127.0.0.1:0", Some(server_tls(&pki, &pki)));
    let relay = start(
        &dir,
        &spool_config(
            &dir.join("spool"),
            "",
            &devo_output(receiver.port(), "localhost", &pki, None, ""),
        ),
    );
    relay
        .client(None)
        .send("h-1", &batch(&[("my.app.x", "after the switch")]))
        .await
        .unwrap();
    let text = wait_stderr(&relay, "does not name \"localhost\"");
    assert!(text.contains("verify_hostname = false"), "{text}");
    assert!(relay.terminate().success());

    // Same spool, hostname check off: the batch goes through (chain still verified).
    let relay = start(
        &dir,
        &spool_config(
            &dir.join("spool"),
            "",
            &devo_output(
                receiver.port(),
                "localhost",
                &pki,
                None,
                "verify_hostname = false",
            ),
        ),
    );
    let lines = receiver.wait_lines(1, Duration::from_secs(20));
    assert_devo_line(&lines[0], "14", "testhost", "my.app.x", "after the switch");
    assert!(relay.terminate().success());
}

#[tokio::test]
async fn zip_mode_and_octet_counting_over_tls() {
    let (_d, dir) = tmp();
    let pki = Pki::generate(&dir, "", "logtrustCA", &["localhost"]).expect("certificates");
    let receiver = Receiver::start("127.0.0.1:0", Some(server_tls(&pki, &pki)));
    let relay = start(
        &dir,
        &spool_config(
            &dir.join("spool"),
            "",
            &devo_output(
                receiver.port(),
                "localhost",
                &pki,
                None,
                "zip = true\nzip_buffer_bytes = 2000\noctet_counting = true\nfacility = 16\nseverity = 5\nconnections = 2",
            ),
        ),
    );
    let events: Vec<(String, String)> = (0..300)
        .map(|i| ("my.app.zip".to_string(), format!("event number {i}")))
        .collect();
    let refs: Vec<(&str, &str)> = events
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    relay.client(None).send("z-1", &batch(&refs)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let data = receiver.data();
        let mut text = String::new();
        if !data.is_empty() {
            use std::io::Read;
            let _ = flate2::read::MultiGzDecoder::new(&data[..]).read_to_string(&mut text);
        }
        if text.lines().count() >= 300 {
            break text;
        }
        assert!(Instant::now() < deadline, "zip members did not all arrive");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        &receiver.data()[..2],
        &[0x1f, 0x8b],
        "raw gzip members on the wire"
    );
    let first = text.lines().next().unwrap();
    // Octet counting: "LEN <133>..." where LEN counts the line with its LF.
    let (len, line) = first.split_once(' ').unwrap();
    assert_eq!(len.parse::<usize>().unwrap(), line.len() + 1);
    assert!(line.starts_with("<133>"), "{line}");
    assert!(
        line.ends_with(" testhost my.app.zip: event number 0"),
        "{line}"
    );
    assert!(relay.terminate().success());
}
