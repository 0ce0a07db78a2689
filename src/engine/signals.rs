//! Process signals: the first SIGTERM/SIGINT drains within
//! `shutdown_timeout`, SIGQUIT within the long `quit_timeout`, a second
//! one exits at once; SIGHUP reloads the TLS certificates; SIGUSR1 reopens the
//! log files (after logrotate moved them).

use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use super::{ReloadHandle, ShutdownHandle};
use crate::error::{Error, ErrorKind, Result};
use crate::state::SharedState;

/// Exit status when a second signal cuts a graceful shutdown short.
const FORCED_EXIT_STATUS: i32 = 1;

/// Catches the signals from now on (they wait until [`install`] handles
/// them): registered before the server announces itself, so a signal sent
/// the moment it says "listening" is never the default, fatal action.
pub(crate) fn register() -> Result<Signals> {
    Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1])
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot install signal handlers").with_source(e))
}

/// Starts the signal thread for `handle`, handling what `signals` caught.
/// A forced exit still removes the instance's state file (`state`).
pub(crate) fn install(
    mut signals: Signals,
    handle: ShutdownHandle,
    reload: ReloadHandle,
    state: SharedState,
    quit_timeout: Duration,
) -> Result<()> {
    std::thread::Builder::new()
        .name("skitai-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGUSR1 {
                    let n = crate::observe::output::reopen_files();
                    tracing::info!("SIGUSR1: {n} log file(s) reopened");
                    continue;
                }
                if signal == SIGHUP {
                    match reload.reload_tls() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                        Err(e) => tracing::error!("SIGHUP: TLS certificates not reloaded, the old ones stay: {e}"),
                    }
                    continue;
                }
                if handle.is_shutting_down() {
                    tracing::warn!(signal, "second signal: exiting now");
                    state.remove_file();
                    std::process::exit(FORCED_EXIT_STATUS);
                }
                if signal == SIGQUIT {
                    tracing::info!("SIGQUIT: stopping, draining connections for up to {quit_timeout:?}");
                    handle.shutdown_within(quit_timeout);
                } else {
                    tracing::info!(signal, "stopping: draining connections");
                    handle.shutdown();
                }
            }
        })
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot start the signal thread").with_source(e))?;
    Ok(())
}
