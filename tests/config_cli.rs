//! Configuration files and command-line flags of both the `skitai` binary and an
//! embedding program (`hello`): `check -c FILE`, errors that name the key and
//! never panic, flags overriding the file, `./skitai.toml`.

#[macro_use]
mod support;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

/// Both programs take the same CLI.
fn programs() -> [PathBuf; 2] {
    [skitai_bin(), hello_bin()]
}

fn run(bin: &Path, args: &[&str]) -> Output {
    run_bounded(Command::new(bin).args(args))
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Asserts a failed run whose stderr names `key`, without a panic.
fn assert_fails_naming(bin: &Path, args: &[&str], key: &str) {
    let out = run(bin, args);
    let (stdout, stderr) = text(&out);
    let what = format!("{} {}", bin.display(), args.join(" "));
    assert!(!out.status.success(), "`{what}` should fail\nstdout: {stdout}\nstderr: {stderr}");
    assert!(out.status.code().is_some(), "`{what}` died from a signal: {:?}\nstderr: {stderr}", out.status);
    assert!(!stderr.contains("panicked at"), "`{what}` panicked:\n{stderr}");
    assert!(stderr.contains(key), "`{what}`: stderr should name {key:?}:\n{stderr}");
}

const GOOD: &str = r#"
name = "mysite"

[server]
address = "127.0.0.1"
port = 5000
shards = 2
threads = 4
io = "auto"
keep_alive = 30
request_timeout = 30
header_timeout = 10
shutdown_timeout = 30
max_upload_size = "256MiB"
max_header_size = "16KiB"
max_headers = 100
max_uri_size = "8KiB"
backlog = 2048
"#;

#[test]
fn check_good_config_ok() {
    let file = temp_toml(GOOD);
    let path = file.path().to_str().unwrap();
    for bin in programs() {
        let out = run(&bin, &["check", "-c", path]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{}: check failed\nstdout: {stdout}\nstderr: {stderr}", bin.display());
        assert!(stdout.contains("ok"), "{}: check should print ok, got stdout {stdout:?}", bin.display());
    }
    // `-c` before the subcommand works too.
    let out = run(&skitai_bin(), &["-c", path, "check"]);
    assert!(out.status.success(), "{}", text(&out).1);
}

#[test]
fn check_integer_sizes_and_empty_file() {
    let file = temp_toml("[server]\nmax_upload_size = 1048576\nmax_header_size = 8192\nmax_uri_size = 4096\n");
    let out = run(&skitai_bin(), &["check", "-c", file.path().to_str().unwrap()]);
    assert!(out.status.success(), "integer byte sizes: {}", text(&out).1);
    let empty = temp_toml("");
    let out = run(&skitai_bin(), &["check", "-c", empty.path().to_str().unwrap()]);
    assert!(out.status.success(), "an empty file is a valid configuration: {}", text(&out).1);
}

/// Bad configurations and the key each error must name.
const BAD: &[(&str, &str)] = &[
    ("[server]\nport = \"abc\"\n", "port"),
    ("[server]\nport = 70000\n", "port"),
    ("[server]\nprot = 5000\n", "prot"),
    ("nmae = \"x\"\n", "nmae"),
    ("[sever]\nport = 1\n", "sever"),
    ("[server]\naddress = \"not-an-ip\"\n", "address"),
    ("[server]\nio = \"kqueue\"\n", "io"),
    ("[server]\nshards = -1\n", "shards"),
    ("[server]\nthreads = 0\n", "threads"),
    ("[server]\nkeep_alive = 0\n", "keep_alive"),
    ("[server]\nheader_timeout = 0\n", "header_timeout"),
    ("[server]\nmax_upload_size = \"lots\"\n", "max_upload_size"),
    ("[server]\nmax_header_size = \"16 parsecs\"\n", "max_header_size"),
    ("[server]\nmax_headers = \"many\"\n", "max_headers"),
    ("[server]\nmax_uri_size = true\n", "max_uri_size"),
    ("[server]\nbacklog = 0\n", "backlog"),
    ("[[mount]]\npath = \"x\"\ntarget = \"y\"\n", "mount"),
    ("[[mount]]\npath = \"/x\"\ntraget = \"y\"\n", "traget"),
    ("name = \"bad name!\"\n", "name"),
    ("[server\nport = 1\n", "config"),
];

#[test]
fn check_bad_configs_name_the_key() {
    for (toml, key) in BAD {
        let file = temp_toml(toml);
        let path = file.path().to_str().unwrap();
        for bin in programs() {
            if *key == "config" {
                // A TOML syntax error: the message must at least point at the file.
                let out = run(&bin, &["check", "-c", path]);
                let stderr = text(&out).1;
                assert!(!out.status.success() && !stderr.contains("panicked at"), "{toml:?}: {stderr}");
                assert!(stderr.contains(path) || stderr.contains("line"), "{toml:?}: say where: {stderr}");
                continue;
            }
            assert_fails_naming(&bin, &["check", "-c", path], key);
        }
    }
}

#[test]
fn starting_with_bad_config_fails_naming_the_key() {
    for (toml, key) in [("[server]\nport = \"abc\"\n", "port"), ("[server]\nprot = 1\n", "prot")] {
        let file = temp_toml(toml);
        for bin in programs() {
            assert_fails_naming(&bin, &["-c", file.path().to_str().unwrap(), "--port", "0"], key);
        }
    }
}

#[test]
fn check_missing_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    for bin in programs() {
        assert_fails_naming(&bin, &["check", "-c", missing.to_str().unwrap()], "nope.toml");
    }
}

/// Bad flags and the name each error must mention.
const BAD_FLAGS: &[(&[&str], &str)] = &[
    (&["--port", "abc"], "port"),
    (&["--port", "70000"], "port"),
    (&["--address", "not-an-ip"], "address"),
    (&["--shards", "x"], "shards"),
    (&["--threads", "many"], "threads"),
    (&["--io", "kqueue"], "io"),
    (&["--mount", "nothing"], "mount"),
    (&["--bogus"], "bogus"),
    (&["--name", "bad name!"], "name"),
    (&["--threads", "0", "--port", "0"], "threads"),
];

#[test]
fn bad_flags_fail_naming_the_flag() {
    for bin in programs() {
        for (args, key) in BAD_FLAGS {
            assert_fails_naming(&bin, args, key);
        }
    }
}

#[test]
fn help_lists_the_flags() {
    for bin in programs() {
        let out = run(&bin, &["--help"]);
        let (stdout, _) = text(&out);
        assert!(out.status.success());
        for flag in ["--port", "--address", "--shards", "--io", "--config", "--devel", "--silent", "--name", "--mount"]
        {
            assert!(stdout.contains(flag), "{}: --help lacks {flag}:\n{stdout}", bin.display());
        }
    }
}

both_drivers! {
    /// Flags override the file: the file's address and port lose to --address/--port,
    /// its `io` to --io.
    fn flags_override_config(io) {
        let other = match io {
            Io::Uring => "epoll",
            Io::Epoll => "uring",
        };
        let server = hello(io)
            .config(&format!("[server]\naddress = \"127.0.0.2\"\nport = 1\nio = \"{other}\"\n"))
            .start();
        assert_eq!(server.addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_ne!(server.addr().port(), 1);
        server.assert_driver(io);
        let mut c = server.connect();
        c.send(get("/"));
        assert_eq!(c.read_response().status, 200);
    }
}

both_drivers! {
    /// Without flags, the file decides address, port, shards and io.
    fn config_values_are_used(io) {
        let server = ServerBuilder::new(hello_bin())
            .no_listen_flags()
            .config(&format!("[server]\naddress = \"127.0.0.1\"\nport = 0\nshards = 2\nio = \"{}\"\n", io.flag()))
            .start();
        assert_eq!(server.addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(server.driver_lines(2), 2, "shards = 2 gives two driver lines:\n{}", server.stderr());
        server.assert_driver(io);
        let mut c = server.connect();
        c.send(get("/"));
        assert_eq!(c.read_response().status, 200);
    }
}

#[test]
fn skitai_toml_in_current_dir_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("skitai.toml"), "[server]\nport = \"abc\"\n").unwrap();
    for bin in programs() {
        let out = run_bounded(Command::new(&bin).current_dir(dir.path()).args(["check"]));
        let stderr = text(&out).1;
        assert!(!out.status.success(), "{}: ./skitai.toml was not read", bin.display());
        assert!(stderr.contains("port") && !stderr.contains("panicked at"), "{stderr}");
    }
    std::fs::write(dir.path().join("skitai.toml"), "[server]\naddress = \"127.0.0.1\"\nport = 0\nshards = 1\n")
        .unwrap();
    let server = ServerBuilder::new(hello_bin()).no_listen_flags().current_dir(dir.path()).start();
    assert_eq!(server.addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut c = server.connect();
    c.send(get("/"));
    assert_eq!(c.read_response().status, 200);
}

#[test]
fn name_flag_accepted() {
    let server = hello(Io::Epoll).arg("--name").arg("mysite").start();
    let mut c = server.connect();
    c.send(get("/"));
    assert_eq!(c.read_response().status, 200);
}

#[test]
fn silent_still_serves() {
    // --silent may hide the `listening on` line, so pick the port here.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = ServerBuilder::new(hello_bin())
        .no_listen_flags()
        .arg("--address")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string())
        .shards(1)
        .arg("--silent")
        .spawn();
    let addr: std::net::SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
    let deadline = Instant::now() + START_TIMEOUT;
    let mut c = loop {
        if let Ok(s) = std::net::TcpStream::connect(addr) {
            break Conn::from_stream(s);
        }
        assert!(server.is_running(), "--silent server exited:\n{}", server.stderr());
        assert!(Instant::now() < deadline, "--silent server never listened on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    };
    c.send(get("/"));
    assert_eq!(c.read_response().status, 200);
}

#[test]
fn devel_and_silent_conflict() {
    for bin in programs() {
        let out = run(&bin, &["--devel", "--silent", "--port", "0"]);
        assert!(!out.status.success());
        assert!(!text(&out).1.contains("panicked at"));
    }
}
