//! The compose smoke test: docker-compose.yml with the stdout override and the demo override
//! (moto and its one-shot setup, moto published on a free 127.0.0.1 port) brings the pair up
//! as the docs say; objects uploaded from the host come out as Devo lines on the relay's
//! stdout (`docker logs`), and the queue ends empty. The health checks gate the start
//! (`depends_on: condition: service_healthy`), so this also proves them.

use std::process::Command;
use std::time::{Duration, Instant};

use sluice_testkit::moto::{clients, Wired};
use sluice_testkit::workspace_root;

use crate::docker::{docker, docker_output};
use crate::stack::{count_ids, figures, tally, Images, TAG};

/// A compose project, taken down (`down -v`) on drop.
struct Project {
    name: String,
    env: Vec<(String, String)>,
}

const FILES: [&str; 3] = [
    "docker-compose.yml",
    "docker-compose.stdout.yml",
    "docker-compose.demo.yml",
];

impl Project {
    /// The compose command: SLUICE_COMPOSE (e.g. `docker compose`), else `docker-compose`.
    fn command(&self, args: &[&str]) -> Command {
        let tool = std::env::var("SLUICE_COMPOSE").unwrap_or_else(|_| "docker-compose".into());
        let mut words = tool.split_whitespace();
        let mut cmd = Command::new(words.next().expect("a compose command"));
        cmd.args(words)
            .current_dir(workspace_root())
            .args(["-p", &self.name]);
        for f in FILES {
            cmd.args(["-f", f]);
        }
        cmd.args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("the compose tool");
        assert!(
            out.status.success(),
            "compose {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self
            .command(&["down", "-v", "--remove-orphans", "-t", "5"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_stdout_profile_brings_the_pair_up_and_lines_flow() {
    if !crate::enabled("compose_stdout_profile_brings_the_pair_up_and_lines_flow") {
        return;
    }
    let started = Instant::now();
    let images = Images::from_env();
    let base = std::env::var("SLUICE_CT_PREFIX").unwrap_or_else(|_| "sluice-ct".into());
    let port = sluice_testkit::free_port();
    let project = Project {
        name: format!("{base}-{}-compose", std::process::id()).replace('.', "-"),
        env: vec![
            ("SLUICE_IMAGE".into(), images.sluice.clone()),
            ("SLUICE_MOTO_IMAGE".into(), images.moto.clone()),
            ("SLUICE_MOTO_PORT".into(), port.to_string()),
            ("SLUICE_TAG".into(), TAG.into()),
        ],
    };
    project.run(&["up", "-d"]);
    let relay = project.run(&["ps", "-q", "relay"]);
    let collector = project.run(&["ps", "-q", "collector"]);
    assert!(
        !relay.is_empty() && !collector.is_empty(),
        "compose started no pair"
    );

    // The setup made the queue; the test uploads through moto's published port.
    let endpoint = format!("http://127.0.0.1:{port}");
    let (s3, sqs) = clients(&endpoint).await;
    let queue_url = sqs
        .get_queue_url()
        .queue_name("demo-logs")
        .send()
        .await
        .expect("the demo's queue (made by the setup service)")
        .queue_url
        .expect("a queue URL");
    let wired = Wired {
        s3,
        sqs,
        bucket: "demo-logs".into(),
        queue_url,
    };
    let mut expected = Vec::new();
    for o in 0..3 {
        let mut body = String::new();
        for l in 0..500 {
            let id = format!("compose-{o}-{l:03}");
            body.push_str(&format!("{id} hello from the compose test\n"));
            expected.push(id);
        }
        wired
            .put(&format!("logs/compose-{o}.log"), body.into_bytes())
            .await;
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    let got = loop {
        let out = docker_output(&["logs", &relay]);
        let got = count_ids(&String::from_utf8_lossy(&out.stdout));
        if expected.iter().all(|id| got.contains_key(id)) && wired.depth().await == (0, 0) {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "lines missing ({} ids seen), queue {:?}; collector log:\n{}",
            got.len(),
            wired.depth().await,
            String::from_utf8_lossy(&docker_output(&["logs", &collector]).stderr)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Both containers report healthy through the health subcommands.
    for c in [&relay, &collector] {
        let health = docker(&["inspect", "-f", "{{.State.Health.Status}}", c]);
        assert!(health == "healthy" || health == "starting", "{c}: {health}");
    }
    let ours: std::collections::BTreeMap<String, usize> = got
        .into_iter()
        .filter(|(id, _)| id.starts_with("compose-"))
        .collect();
    tally(&expected, &ours);
    figures(
        "compose stdout",
        expected.len(),
        &ours,
        started.elapsed().as_secs_f64(),
        &Default::default(),
    );
}
