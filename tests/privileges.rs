//! A server started as root drops to `--user` once its ports are bound.

mod support;

use support::*;

fn status_ids(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in status"));
    line.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn root_switches_to_the_named_user_after_binding() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"readable by everyone").unwrap();
    // The temp dir is 0700 root-owned; let `nobody` traverse it.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mount = format!("/={}", dir.path().display());
    let server = skitai(Io::Epoll).arg("--user").arg("nobody").arg("--mount").arg(&mount).start();
    let uids = status_ids(server.pid(), "Uid:");
    let gids = status_ids(server.pid(), "Gid:");
    let nobody = 65534;
    assert!(uids.iter().all(|&u| u == nobody), "real, effective, saved and fs uid: {uids:?}");
    assert!(gids.iter().all(|&g| g != 0), "no root group left: {gids:?}");
    assert!(server.stderr().contains("dropped root privileges"), "{}", server.stderr());
    // Still serving (the port was bound as root, files are read as nobody).
    let mut c = server.connect();
    c.send(get("/a.txt"));
    let r = c.read_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"readable by everyone");
}

#[test]
fn an_unknown_user_is_a_config_error() {
    if !is_root() {
        eprintln!("skipped: needs root (CI runs as root)");
        return;
    }
    let state_dir = tempfile::tempdir().unwrap();
    let out = run_bounded(std::process::Command::new(skitai_bin()).env(STATE_DIR_ENV, state_dir.path()).args([
        "--port",
        "0",
        "--address",
        "127.0.0.1",
        "--user",
        "no-such-user-x",
    ]));
    assert_eq!(std::fs::read_dir(state_dir.path()).unwrap().count(), 0, "the failed start removed its state file");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.user") && stderr.contains("no-such-user-x"), "{stderr}");
}
