//! A network namespace joined to this one by a veth pair, for the `rtt`
//! scenario's worker: set up with `ip`, delayed with `tc ... netem` where
//! the kernel has it, and removed when the [`Namespace`] is dropped (also
//! when the scenario fails half-way).

use std::process::{Command, Stdio};

use anyhow::Context as _;

/// Why the scenario cannot run here, in one line; `None` if it can:
/// it needs root (namespaces, links) and the `ip` and `tc` tools.
pub fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "Uid: real effective saved fs": the effective one decides.
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned));
    if euid.as_deref() != Some("0") {
        return Some("rtt: needs root (network namespaces and veth links)".into());
    }
    for tool in ["ip", "tc"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("rtt: needs the `{tool}` tool (iproute2) on PATH"));
        }
    }
    None
}

/// A namespace with one veth link to the host side.
pub struct Namespace {
    name: String,
    host_if: String,
    /// The host side's address, which the namespace reaches.
    pub host_ip: String,
    /// Whether netem delays the link (else the kernel lacks netem).
    pub netem: bool,
}

/// Runs `ip`/`tc` with `args`; an error names the command and its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Namespace {
    /// Creates the namespace `jqb<pid>` and a veth pair between it and the
    /// host, addressed from 10.213.0.0/16 (a /30 picked by pid, so two
    /// runs at once do not collide), and tries to delay each direction by
    /// `one_way_ms` with netem.
    pub fn create(one_way_ms: f64) -> anyhow::Result<Namespace> {
        let pid = std::process::id();
        let subnet = pid % 16_000;
        let host_ip = format!("10.213.{}.{}", subnet / 64, (subnet % 64) * 4 + 1);
        let ns_ip = format!("10.213.{}.{}", subnet / 64, (subnet % 64) * 4 + 2);
        // The guard exists before the first command, so that whatever was
        // created is removed if a later step fails.
        let mut ns = Namespace {
            name: format!("jqb{pid}"),
            host_if: format!("jqbh{pid}"),
            host_ip,
            netem: false,
        };
        let ns_if = format!("jqbn{pid}");
        let name = ns.name.clone();
        let host_if = ns.host_if.clone();
        run("ip", &["netns", "add", &name])?;
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
        )?;
        run("ip", &["link", "set", &ns_if, "netns", &name])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", ns.host_ip),
                "dev",
                &host_if,
            ],
        )?;
        run("ip", &["link", "set", &host_if, "up"])?;
        let in_ns = |args: &[&str]| -> anyhow::Result<()> {
            let mut all = vec!["netns", "exec", name.as_str()];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        in_ns(&["ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        in_ns(&["ip", "link", "set", &ns_if, "up"])?;
        in_ns(&["ip", "link", "set", "lo", "up"])?;
        if one_way_ms > 0.0 {
            let delay = format!("{}us", (one_way_ms * 1000.0).round() as u64);
            let host = run(
                "tc",
                &[
                    "qdisc", "add", "dev", &host_if, "root", "netem", "delay", &delay,
                ],
            );
            let inside = host.and_then(|()| {
                in_ns(&[
                    "tc", "qdisc", "add", "dev", &ns_if, "root", "netem", "delay", &delay,
                ])
            });
            match inside {
                Ok(()) => ns.netem = true,
                Err(e) => {
                    println!("   netem unavailable ({e:#}); the delay proxy adds the delay");
                    // A half-applied delay would count twice with the
                    // proxy's.
                    let _ = run("tc", &["qdisc", "del", "dev", &host_if, "root"]);
                }
            }
        }
        Ok(ns)
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it
        // the host end; the host end is deleted as well in case the pair
        // was never moved (a failed set-up). Errors only mean "already
        // gone".
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("rtt: removing namespace {}: {e:#}", self.name);
        }
        let _ = run("ip", &["link", "del", &self.host_if]);
    }
}
