//! The process model (issue 9): a master process with worker processes,
//! process titles, a worker that dies and is restarted, SIGHUP reloading
//! under load with no failed request, and the daemon commands
//! (`start`, `status`, `reload`, `upgrade`, `stop`, `restart`) with their pid file.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

both_drivers! {
    /// The master and its workers carry their titles (`ps`, /proc/PID/cmdline):
    /// `skitai:<name> master` and `skitai:<name> worker #N`, one per `workers`.
    fn process_titles(io) {
        let server = hello(io).arg("--workers").arg("2").start();
        assert!(cmdline(server.pid()).starts_with("skitai:hello master"), "{}", cmdline(server.pid()));
        assert!(eventually(Duration::from_secs(10), || server.worker_pids().len() == 2), "{:?}", server.worker_pids());
        let mut titles: Vec<String> = server.worker_pids().into_iter().map(cmdline).collect();
        titles.sort();
        assert!(titles[0].starts_with("skitai:hello worker #0"), "{titles:?}");
        assert!(titles[1].starts_with("skitai:hello worker #1"), "{titles:?}");
        assert!(hello_answers(&server));
    }
}

both_drivers! {
    /// A worker killed with SIGKILL is restarted by the master (with a log
    /// line), and requests are served again; the master keeps its pid.
    fn killed_worker_is_restarted(io) {
        let server = hello(io).start();
        let worker = server.serving_pid();
        // SAFETY: kill(2) on our own server's worker.
        unsafe { libc::kill(worker as i32, libc::SIGKILL) };
        assert!(
            eventually(Duration::from_secs(15), || server.stderr().contains("worker #0 restarted")),
            "no restart:\n{}",
            server.stderr()
        );
        assert!(server.stderr().contains("exited unexpectedly (killed by signal 9)"), "{}", server.stderr());
        assert!(eventually(Duration::from_secs(10), || {
            let now = server.worker_pids();
            now.len() == 1 && now[0] != worker
        }));
        assert!(eventually(Duration::from_secs(10), || hello_answers(&server)));
    }
}

both_drivers! {
    /// SIGHUP under `wrk` load: new workers start on the same listening
    /// sockets and the old ones drain; no connection is refused and no
    /// request fails (wrk reports no socket errors and no non-2xx answers).
    fn sighup_under_load_loses_nothing(io) {
        let mut server = hello(io).arg("--workers").arg("2").start();
        let url = server.url("/");
        let wrk = std::thread::spawn(move || {
            Command::new("wrk").args(["-t1", "-c32", "-d4s", &url]).output().expect("wrk runs")
        });
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(900));
            server.signal(libc::SIGHUP);
        }
        let out = wrk.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        assert!(text.contains("requests in"), "{text}");
        assert!(!text.contains("Socket errors"), "wrk saw failures during the reloads:\n{text}\n{}", server.stderr());
        assert!(!text.contains("Non-2xx"), "{text}");
        assert_eq!(server.stderr().matches("reload done").count(), 3, "{}", server.stderr());
        assert!(server.is_running());
        assert!(hello_answers(&server));
    }
}

both_drivers! {
    /// SIGTERM to the master: the workers drain, the master exits 0 and removes its pid file.
    fn sigterm_to_the_master_stops_everything(io) {
        let dir = tempfile::tempdir().unwrap();
        let mut server = hello(io).arg("--data-dir").arg(dir.path()).start();
        let pid_file = dir.path().join(".hello.pid");
        assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), server.pid().to_string());
        let worker = server.serving_pid();
        server.signal(libc::SIGTERM);
        let status = server.wait_exit(Duration::from_secs(20)).expect("the master exits");
        assert_eq!(status.code(), Some(0), "{}", server.stderr());
        assert!(!alive(worker), "the worker outlived its master");
        assert!(!pid_file.exists(), "the pid file is removed");
    }
}

/// Runs the `hello` example with `args` (a daemon command), returning (exit code, stdout + stderr).
fn hello_command(args: &[String]) -> (i32, String) {
    let out = Command::new(hello_bin()).args(args).output().expect("hello runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn daemon_start_status_reload_stop_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let name = format!("daemon-{port}");
    let common = ["--name", &name, "--data-dir", &data, "--port", &port, "--address", "127.0.0.1", "--shards", "1"];
    let with = |cmd: &'static str| -> Vec<String> {
        std::iter::once(cmd).chain(common.iter().copied()).map(str::to_owned).collect()
    };

    // A stale pid file (a pid that is not our master) is detected and replaced.
    let pid_file = dir.path().join(format!(".{name}.pid"));
    std::fs::write(&pid_file, "999999\n").unwrap();
    let (code, text) = hello_command(&with("start"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("stale pid file"), "{text}");
    assert!(text.contains("started (pid"), "{text}");
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(cmdline(pid).starts_with(&format!("skitai:{name} master")), "{}", cmdline(pid));
    let url = format!("http://127.0.0.1:{port}/");
    let got = Command::new("curl").args(["-s", &url]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "Hello, World!");

    // status: running, with the pid.
    let (code, text) = hello_command(&with("status"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("[running:{pid}]")), "{text}");

    // start again: already running, nothing changes.
    let (code, text) = hello_command(&with("start"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("already running"), "{text}");

    // reload: new workers; the daemon's stderr file says so.
    let (code, text) = hello_command(&with("reload"));
    assert_eq!(code, 0, "{text}");
    let stderr_file = dir.path().join(".stderr");
    assert!(
        eventually(Duration::from_secs(15), || std::fs::read_to_string(&stderr_file)
            .unwrap_or_default()
            .contains("reload done")),
        "{}",
        std::fs::read_to_string(&stderr_file).unwrap_or_default()
    );

    // upgrade: a new master from the program's file takes over the sockets.
    let (code, text) = hello_command(&with("upgrade"));
    assert_eq!(code, 0, "{text}");
    let upgraded: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(text.contains(&format!("upgraded: new master pid {upgraded}")), "{text}");
    assert_ne!(upgraded, pid);
    assert!(eventually(Duration::from_secs(20), || !alive(pid)), "the old master is still there");
    let got = Command::new("curl").args(["-s", &url]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&got.stdout), "Hello, World!");

    // restart: a new master.
    let (code, text) = hello_command(&with("restart"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("stopped") && text.contains("started"), "{text}");
    let second: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert_ne!(second, upgraded);
    assert!(!alive(upgraded), "the old master is gone");

    // stop: waits for the exit, removes the pid file, and status says stopped (exit 3).
    let (code, text) = hello_command(&with("stop"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("stopped"), "{text}");
    assert!(!alive(second));
    assert!(!pid_file.exists());
    let (code, text) = hello_command(&with("status"));
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("[stopped]"), "{text}");
    // stop on a stopped instance is fine.
    let (code, _) = hello_command(&with("stop"));
    assert_eq!(code, 0);
}

#[test]
fn install_writes_a_notify_unit_and_remove_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out =
            Command::new(hello_bin()).args(args).env("SKITAI_SYSTEMD_DIR", dir.path()).output().expect("hello runs");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    };
    let (code, text) = run(&["install", "--name", "shop", "--port", "8080", "--workers", "2"]);
    assert_eq!(code, 0, "{text}");
    let unit = dir.path().join("shop.service");
    let content = std::fs::read_to_string(&unit).unwrap();
    for line in
        ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "WantedBy=multi-user.target"]
    {
        assert!(content.lines().any(|l| l == line), "no {line:?} in\n{content}");
    }
    let exec = content.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    assert!(exec.ends_with("--name shop --port 8080 --workers 2"), "{exec}");
    assert!(!exec.contains("install"), "{exec}");
    let (code, text) = run(&["remove", "--name", "shop"]);
    assert_eq!(code, 0, "{text}");
    assert!(!unit.exists());
}

/// Receives the master's sd_notify datagrams on a socket of our own.
#[test]
fn master_notifies_systemd_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut server = hello(Io::Epoll).env("NOTIFY_SOCKET", path.to_str().unwrap()).start();
    let recv = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = recv();
    assert!(ready.starts_with("READY=1\nMAINPID="), "{ready}");
    assert!(ready.contains(&format!("MAINPID={}", server.pid())), "{ready}");
    server.signal(libc::SIGHUP);
    let reloading = recv();
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
    assert!(recv().starts_with("READY=1"));
    server.signal(libc::SIGTERM);
    assert!(recv().starts_with("STOPPING=1"));
    assert_eq!(server.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()), Some(0));
}

/// Socket activation: a listener bound by "systemd" (here, the test) is
/// passed as fd 3 with LISTEN_FDS=1 and LISTEN_PID set to the server's pid;
/// the server serves on it instead of binding its own port.
#[test]
fn socket_activation_serves_on_the_passed_socket() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let mut command = Command::new("sh");
    // `exec` keeps the shell's pid, which `$$` names.
    command
        .arg("-c")
        .arg(format!("LISTEN_PID=$$ LISTEN_FDS=1 exec {} --port 0 --shards 2 --name activated", hello_bin().display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: dup2 and fcntl between fork and exec are async-signal-safe; fd is open.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec: then clear it instead.
            let done = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
            if done < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().unwrap();
    drop(listener);
    let ok = eventually(Duration::from_secs(15), || {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "2", &format!("http://{addr}/")])
            .output()
            .is_ok_and(|o| o.stdout == b"Hello, World!")
    });
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(ok, "nothing served on the passed socket {addr}:\n{stderr}");
    assert!(stderr.contains("socket activation: 1 socket(s) from systemd"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
