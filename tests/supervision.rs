//! What the master does beyond starting workers (issue 9): the worker
//! critical point, SIGQUIT's long deadline, devel mode's reload when the
//! program or its configuration changes, and the binary upgrade on SIGUSR2
//! (under load, keeping the shared state; and one that fails).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

/// Copies the example `name`'s binary into `dir` as `program`, the path a
/// test later replaces (as an installation of a new version would).
fn install_program(name: &str, dir: &Path) -> PathBuf {
    let path = dir.join("program");
    replace_program(&example_bin(name), &path);
    path
}

/// Puts a copy of `from` at `path` by renaming a new file over it (a new
/// inode, as package managers and builds do).
fn replace_program(from: &Path, path: &Path) {
    let fresh = path.with_extension("new");
    std::fs::copy(from, &fresh).expect("copy the program");
    std::fs::rename(&fresh, path).expect("rename it into place");
}

/// What `/proc/PID/exe` points to.
fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default()
}

/// A process this test did not spawn itself (a new master after an
/// upgrade), stopped with SIGTERM, then SIGKILL, when dropped.
struct Adopted(u32);

impl Drop for Adopted {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test saw being started.
        unsafe { libc::kill(self.0 as i32, libc::SIGTERM) };
        if !eventually(Duration::from_secs(20), || !alive(self.0)) {
            // SAFETY: as above.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
}

/// The pid in the instance's pid file in `data`.
fn pid_file_pid(data: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(data.join(format!(".{name}.pid"))).ok()?.trim().parse().ok()
}

fn http_get(server: &Server, path: &str) -> Response {
    let mut c = server.connect();
    c.send(get(path));
    c.read_response()
}

both_drivers! {
    /// A worker whose shard burns CPU past the critical point (30% of a
    /// core, 2 checks 1 s apart) is replaced by a new worker, with a log
    /// line, and requests go on being served; an idle worker is left alone.
    fn critical_point_replaces_a_cpu_bound_worker(io) {
        let server = hello(io)
            .config("[server]\nshutdown_timeout = 2\n[server.critical_point]\ncpu_percent = 30.0\ncontinuous = 2\ninterval = 1\n")
            .start();
        let worker = server.serving_pid();
        // Idle across more than `continuous` checks: not replaced.
        std::thread::sleep(Duration::from_millis(3500));
        assert!(!server.stderr().contains("critical point"), "{}", server.stderr());
        assert_eq!(server.serving_pid(), worker);

        let addr = server.addr();
        let burner = std::thread::spawn(move || {
            let mut c = Conn::connect(addr);
            c.send(get("/burn?ms=10000"));
            // The worker is stopped under it: any outcome is fine here.
            let _ = c.try_read_response(false);
        });
        assert!(
            eventually(Duration::from_secs(30), || server.stderr().contains("is over its critical point")),
            "no critical point line:\n{}",
            server.stderr()
        );
        let line = server.stderr().lines().find(|l| l.contains("critical point")).unwrap().to_owned();
        assert!(line.contains(&format!("pid {worker}")) && line.contains("limit 30%"), "{line}");
        assert!(
            eventually(Duration::from_secs(20), || {
                let now = server.worker_pids();
                now.len() == 1 && now[0] != worker
            }),
            "no replacement worker: {:?}",
            server.worker_pids()
        );
        assert!(eventually(Duration::from_secs(10), || hello_answers(&server)));
        assert!(eventually(Duration::from_secs(20), || !alive(worker)), "the hot worker was not stopped");
        burner.join().unwrap();
    }
}

both_drivers! {
    /// SIGQUIT stops gracefully with the long deadline (`quit_timeout`): a
    /// 3 s request completes although `shutdown_timeout` is 1 s; the same
    /// request is cut when SIGTERM's 1 s deadline passes.
    fn sigquit_waits_for_the_long_deadline(io) {
        let config = "[server]\nshutdown_timeout = 1\nquit_timeout = 60\n";
        for (signal, completes) in [(libc::SIGQUIT, true), (libc::SIGTERM, false)] {
            let mut server = hello(io).config(config).start();
            let mut c = server.connect();
            c.send(get("/delay?ms=3000"));
            // Let the request reach its handler before the signal.
            std::thread::sleep(Duration::from_millis(300));
            server.signal(signal);
            let answer = c.try_read_response(false);
            if completes {
                let r = answer.unwrap_or_else(|e| panic!("SIGQUIT cut the request: {}\n{}", describe(&e), server.stderr()));
                assert_eq!(r.status, 200);
                assert_eq!(r.body_str(), "done");
                assert!(r.connection_has("close"), "{:?}", r.header("connection"));
            } else {
                assert!(answer.is_err(), "SIGTERM's deadline did not cut the 3 s request");
            }
            let status = server.wait_exit(Duration::from_secs(30)).expect("the master exits");
            assert_eq!(status.code(), Some(0), "{}", server.stderr());
            if completes {
                assert!(server.stderr().contains("SIGQUIT: stopping"), "{}", server.stderr());
            }
        }
    }
}

/// `--devel`: editing the configuration file starts new workers with it
/// (here a mount moves to another directory).
#[test]
fn devel_reloads_when_the_configuration_changes() {
    let dir = tempfile::tempdir().unwrap();
    for (sub, text) in [("a", "from a"), ("b", "from b")] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
        std::fs::write(dir.path().join(sub).join("x.txt"), text).unwrap();
    }
    let config = dir.path().join("skitai.toml");
    let mount = |sub: &str| format!("[[mount]]\npath = \"/files\"\ntarget = \"{}\"\n", dir.path().join(sub).display());
    std::fs::write(&config, mount("a")).unwrap();
    let server = hello(Io::Epoll).arg("--devel").arg("-c").arg(&config).start();
    assert_eq!(http_get(&server, "/files/x.txt").body_str(), "from a");
    let worker = server.serving_pid();

    std::fs::write(&config, mount("b")).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || http_get(&server, "/files/x.txt").body_str() == "from b"),
        "the new configuration was not taken:\n{}",
        server.stderr()
    );
    assert!(server.stderr().contains("skitai.toml changed; starting new workers"), "{}", server.stderr());
    assert!(eventually(Duration::from_secs(20), || server.worker_pids() != vec![worker]));
}

/// `--devel`: installing a new build of the program starts new workers
/// running it; without `--devel` nothing watches.
#[test]
fn devel_reloads_when_the_program_changes() {
    let dir = tempfile::tempdir().unwrap();
    let program = install_program("hello", dir.path());
    let server = ServerBuilder::new(program.clone()).io(Io::Uring).shards(1).arg("--devel").start();
    let worker = server.serving_pid();
    assert_eq!(exe_of(worker), program.display().to_string());

    replace_program(&hello_bin(), &program);
    // The old worker runs a file that is gone now; the new one the new file.
    assert!(exe_of(worker).ends_with("(deleted)"), "{}", exe_of(worker));
    assert!(
        eventually(Duration::from_secs(20), || {
            let now = server.worker_pids();
            now.len() == 1 && now[0] != worker && exe_of(now[0]) == program.display().to_string()
        }),
        "no worker of the new program: {:?}\n{}",
        server.worker_pids(),
        server.stderr()
    );
    assert!(server.stderr().contains("program changed; starting new workers"), "{}", server.stderr());
    assert!(eventually(Duration::from_secs(10), || hello_answers(&server)));
}

both_drivers! {
    /// SIGUSR2 under `wrk` load: the program's new executable starts as a
    /// new master on the same sockets and state file, the old master and
    /// its workers drain and exit 0; no request fails, the pid file and
    /// `status` name the new master, and a shared state keeps its value.
    fn binary_upgrade_under_load_keeps_state_and_loses_nothing(io) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let program = install_program("counter", dir.path());
        let mut server = ServerBuilder::new(program.clone())
            .io(io)
            .shards(1)
            .arg("--workers")
            .arg("2")
            .arg("--data-dir")
            .arg(&data)
            .start();
        let old_master = server.pid();
        let old_workers = server.worker_pids();
        for _ in 0..3 {
            assert_eq!(http_get(&server, "/incr").status, 200);
        }
        replace_program(&example_bin("counter"), &program);

        let url = server.url("/get");
        let wrk = std::thread::spawn(move || {
            Command::new("wrk").args(["-t1", "-c32", "-d4s", &url]).output().expect("wrk runs")
        });
        std::thread::sleep(Duration::from_secs(1));
        server.signal(libc::SIGUSR2);
        assert!(
            eventually(Duration::from_secs(30), || server.stderr().contains("SIGUSR2: upgraded")),
            "no upgrade:\n{}",
            server.stderr()
        );
        let new_master = pid_file_pid(&data, "counter").expect("a pid file");
        let _guard = Adopted(new_master);
        assert_ne!(new_master, old_master);
        assert!(cmdline(new_master).starts_with("skitai:counter master"), "{}", cmdline(new_master));

        let status = server.wait_exit(Duration::from_secs(30)).expect("the old master exits");
        assert_eq!(status.code(), Some(0), "{}", server.stderr());
        assert!(eventually(Duration::from_secs(10), || old_workers.iter().all(|&w| !alive(w))));
        let new_workers = children_of(new_master);
        assert_eq!(new_workers.len(), 2, "{new_workers:?}");
        for w in &new_workers {
            assert_eq!(exe_of(*w), program.display().to_string(), "a new worker runs the old file");
        }

        let out = wrk.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("requests in"), "{text}");
        assert!(!text.contains("Socket errors"), "wrk saw failures during the upgrade:\n{text}\n{}", server.stderr());
        assert!(!text.contains("Non-2xx"), "{text}");

        // The shared state lived through it; `status` reads the new master.
        let value = http_get(&server, "/get").body_str();
        assert!(value.contains("\"value\":3"), "{value}");
        let out = Command::new(&program)
            .args(["status", "--json", "--data-dir"])
            .arg(&data)
            .env(STATE_DIR_ENV, server.state_dir())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("\"pid\":{new_master}")), "{text}");

        // The new master owns the state file now: it removes it when it stops.
        drop(_guard);
        assert!(!alive(new_master));
        let left: Vec<_> = std::fs::read_dir(server.state_dir()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "the state file outlived the new master: {left:?}");
    }
}

/// A new executable that cannot start leaves the running instance as it
/// was: same master, same worker, same pid file, still serving.
#[test]
fn failed_binary_upgrade_keeps_the_old_master_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let program = install_program("hello", dir.path());
    let mut server = ServerBuilder::new(program.clone()).io(Io::Epoll).shards(1).arg("--data-dir").arg(&data).start();
    let worker = server.serving_pid();
    let broken = dir.path().join("broken.sh");
    std::fs::write(&broken, "#!/bin/sh\necho 'this build is broken' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    replace_program(&broken, &program);

    server.signal(libc::SIGUSR2);
    assert!(eventually(Duration::from_secs(20), || server.stderr().contains("not upgraded")), "{}", server.stderr());
    assert!(server.stderr().contains("the new program exited (exit status 3)"), "{}", server.stderr());
    assert!(server.is_running());
    assert_eq!(server.worker_pids(), vec![worker]);
    assert_eq!(pid_file_pid(&data, "hello"), Some(server.pid()));
    assert!(hello_answers(&server));
}

/// Under systemd, an upgrade hands the main pid over (`MAINPID=` from the
/// old master, then `READY=1` from the new one) and the new master keeps
/// pinging the watchdog after the old one is gone, although systemd's
/// `WATCHDOG_PID` named the old one.
#[test]
fn binary_upgrade_under_systemd_hands_over_the_main_pid_and_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let program = install_program("hello", dir.path());
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // `exec` keeps the shell's pid, which `$$` names, as systemd's WATCHDOG_PID would.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "WATCHDOG_PID=$$ exec {} --port 0 --address 127.0.0.1 --shards 1 --io epoll --name wd --data-dir {}",
            program.display(),
            data.display()
        ))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env(STATE_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let old = child.id();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = recv();
    assert!(ready.contains(&format!("MAINPID={old}")), "{ready}");

    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(old as i32, libc::SIGUSR2) };
    let mut seen = Vec::new();
    let new = loop {
        let message = recv();
        seen.push(message.clone());
        if let Some(pid) = message.lines().find_map(|l| l.strip_prefix("MAINPID=")).and_then(|p| p.parse::<u32>().ok())
        {
            if pid != old {
                break pid;
            }
        }
    };
    let _guard = Adopted(new);
    assert!(child.wait().unwrap().success(), "the old master exits 0");
    assert!(!alive(old));
    // Only the new master is left to ping: what the old one sent is drained first.
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    while socket.recv(&mut buf).is_ok() {}
    socket.set_nonblocking(false).unwrap();
    // Pings come every 200 ms (half of WATCHDOG_USEC); 3 s is plenty.
    socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let pinged = (0..50).any(|_| {
        let n = socket.recv(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1")
    });
    assert!(pinged, "no watchdog ping after the old master left; seen: {seen:?}");
    assert_eq!(pid_file_pid(&data, "wd"), Some(new));
}
