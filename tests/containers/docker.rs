//! The Docker CLI, as the container tests use it: containers, networks and volumes created
//! under one run's name prefix and removed by [`Run`]'s drop even when a test fails; a
//! container's peak memory from its cgroup (v1); its logs. Blocking calls (`docker` is a child
//! process); the tests run them on a multi-threaded runtime.
//!
//! It does not pull images (there is no registry here): every image must exist locally
//! (scripts/container-test.sh builds them).

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

/// Runs `docker ARGS`; its stdout, trimmed. Panics with docker's stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = docker_output(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `docker ARGS` and hands back whatever happened.
pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI (is it installed?)")
}

/// True when the image exists locally.
pub fn image_exists(image: &str) -> bool {
    docker_output(&["image", "inspect", image]).status.success()
}

/// One test's Docker objects, all named `<prefix>-...`, removed on drop (containers first,
/// then networks and volumes).
pub struct Run {
    pub prefix: String,
    containers: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
}

/// A container to start (`docker run -d`).
#[derive(Default, Clone)]
pub struct Spec {
    pub name: String,
    pub image: String,
    pub network: String,
    pub aliases: Vec<String>,
    /// `-v` arguments (`SOURCE:TARGET[:ro]`).
    pub volumes: Vec<String>,
    /// Container ports published on 127.0.0.1 at a port Docker picks.
    pub publish: Vec<u16>,
    pub user: Option<String>,
    pub entrypoint: Option<String>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
}

impl Run {
    /// A run named `<SLUICE_CT_PREFIX or sluice-ct>-<pid>-<case>`.
    pub fn new(case: &str) -> Run {
        let base = std::env::var("SLUICE_CT_PREFIX").unwrap_or_else(|_| "sluice-ct".into());
        Run {
            prefix: format!("{base}-{}-{case}", std::process::id()),
            containers: Mutex::default(),
            networks: Mutex::default(),
            volumes: Mutex::default(),
        }
    }

    /// `<prefix>-<what>`.
    pub fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    /// Creates the network `<prefix>-<what>`; its name.
    pub fn network(&self, what: &str) -> String {
        let name = self.name(what);
        docker(&["network", "create", &name]);
        self.networks.lock().unwrap().push(name.clone());
        name
    }

    /// Creates the volume `<prefix>-<what>`; its name.
    pub fn volume(&self, what: &str) -> String {
        let name = self.name(what);
        docker(&["volume", "create", &name]);
        self.volumes.lock().unwrap().push(name.clone());
        name
    }

    /// Starts a container (detached); its name.
    pub fn run(&self, spec: &Spec) -> String {
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into()];
        args.push(spec.name.clone());
        // Registered before it exists: a failed `run` may still leave a created container.
        self.containers.lock().unwrap().push(spec.name.clone());
        args.extend(["--network".into(), spec.network.clone()]);
        for a in &spec.aliases {
            args.extend(["--network-alias".into(), a.clone()]);
        }
        for v in &spec.volumes {
            args.extend(["-v".into(), v.clone()]);
        }
        for p in &spec.publish {
            args.extend(["-p".into(), format!("127.0.0.1::{p}")]);
        }
        if let Some(u) = &spec.user {
            args.extend(["--user".into(), u.clone()]);
        }
        if let Some(e) = &spec.entrypoint {
            args.extend(["--entrypoint".into(), e.clone()]);
        }
        for (k, v) in &spec.env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        args.push(spec.image.clone());
        args.extend(spec.args.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&refs);
        spec.name.clone()
    }

    /// Removes every container, network and volume of the run (errors ignored: best effort,
    /// also called from drop while a test panics).
    pub fn clean(&self) {
        for c in self.containers.lock().unwrap().drain(..) {
            let _ = docker_output(&["rm", "-f", "-v", &c]);
        }
        for n in self.networks.lock().unwrap().drain(..) {
            let _ = docker_output(&["network", "rm", &n]);
        }
        for v in self.volumes.lock().unwrap().drain(..) {
            let _ = docker_output(&["volume", "rm", "-f", &v]);
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.clean();
    }
}

/// The host address (`127.0.0.1:PORT`) a container's port is published on.
pub fn published(container: &str, port: u16) -> String {
    let out = docker(&["port", container, &format!("{port}/tcp")]);
    out.lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("{container}: port {port} not published on 127.0.0.1: {out}"))
        .to_string()
}

/// A container's full id.
pub fn id(container: &str) -> String {
    docker(&["inspect", "-f", "{{.Id}}", container])
}

/// True while the container runs.
pub fn running(container: &str) -> bool {
    docker_output(&["inspect", "-f", "{{.State.Running}}", container])
        .stdout
        .starts_with(b"true")
}

/// Peak memory of a running container in bytes (cgroup v1
/// `memory/docker/<id>/memory.max_usage_in_bytes`: the process's memory plus the page cache
/// it caused, such as the spool's writes); None when the cgroup is not there (stopped, or
/// another cgroup layout).
pub fn peak_memory(container: &str) -> Option<u64> {
    let path = Path::new("/sys/fs/cgroup/memory/docker")
        .join(id(container))
        .join("memory.max_usage_in_bytes");
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// (stdout, stderr) of a container.
pub fn logs(container: &str) -> (String, String) {
    let out = docker_output(&["logs", container]);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
