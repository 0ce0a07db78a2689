//! Shards: one thread per core, each with its own runtime, listeners,
//! connections and handler instances. Nothing on the request path is shared.

mod ctx;
mod driver;

use std::net::TcpListener as StdTcpListener;
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures_util::future::{Either, join_all, select};
use futures_util::{FutureExt, StreamExt};
use monoio::blocking::DefaultThreadPool;
use monoio::net::TcpListener;

pub(crate) use ctx::{Protocols, Route, ShardCtx};

use crate::apps::static_files::StaticFiles;
use crate::config::{IoMode, Limits};
use crate::mount::{Mount, MountSpec, MountTable, ShardInfo, Target};
use crate::proto::ListenerRole;

/// Pause after an accept error such as EMFILE, so a full fd table does not spin the shard.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Messages a shard receives from outside its thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Stop accepting, finish in-flight requests, close idle connections, exit.
    Drain,
}

/// What one shard thread needs to start.
pub(crate) struct ShardPlan {
    pub(crate) info: ShardInfo,
    pub(crate) core: Option<core_affinity::CoreId>,
    pub(crate) io: IoMode,
    pub(crate) limits: Limits,
    pub(crate) devel: bool,
    pub(crate) listeners: Vec<(StdTcpListener, ListenerRole)>,
    pub(crate) protocols: Protocols,
    pub(crate) mounts: Arc<Vec<(String, MountSpec)>>,
    pub(crate) pool: DefaultThreadPool,
}

/// A running shard seen from the thread that started it.
pub(crate) struct ShardHandle {
    pub(crate) control: UnboundedSender<Control>,
    pub(crate) thread: JoinHandle<()>,
}

/// Starts a shard thread. `on_exit` runs on the shard thread when it ends, with
/// an error message if the shard could not run.
pub(crate) fn spawn(
    plan: ShardPlan,
    on_exit: impl FnOnce(usize, Option<String>) + Send + 'static,
) -> std::io::Result<ShardHandle> {
    let (control, control_rx) = unbounded();
    let id = plan.info.id;
    let thread = std::thread::Builder::new().name(format!("skitai-shard-{id}")).spawn(move || {
        let result = run_shard(plan, control_rx);
        on_exit(id, result.err());
    })?;
    Ok(ShardHandle { control, thread })
}

fn run_shard(plan: ShardPlan, control: UnboundedReceiver<Control>) -> Result<(), String> {
    let ShardPlan { info, core, io, limits, devel, listeners, protocols, mounts, pool } = plan;
    let pinned = core.is_some_and(core_affinity::set_for_current);
    let report = |choice: &driver::DriverChoice| {
        let core = core.filter(|_| pinned).map_or_else(|| "unpinned".to_owned(), |c| format!("core {}", c.id));
        tracing::info!("shard {}: driver={} ({}), {core}", info.id, choice.name, choice.why);
    };
    driver::run_on_driver(io, pool, report, move || async move {
        let table = MountTable::new(
            mounts
                .iter()
                .map(|(prefix, spec)| Mount {
                    prefix: Rc::from(prefix.as_str()),
                    target: match spec {
                        MountSpec::Handler(factory) => Target::Handler(factory.build(&info)),
                        MountSpec::Static(dir) => Target::Static(Rc::new(StaticFiles::new(dir.clone()))),
                    },
                })
                .collect(),
        );
        let ctx = Rc::new(ShardCtx::new(info.id, limits, devel, protocols, table));
        shard_main(ctx, listeners, control).await
    })
    .map_err(|e| format!("shard {}: {e}", info.id))?
}

async fn shard_main(
    ctx: Rc<ShardCtx>,
    listeners: Vec<(StdTcpListener, ListenerRole)>,
    mut control: UnboundedReceiver<Control>,
) -> Result<(), String> {
    let mut accepting = Vec::with_capacity(listeners.len());
    for (listener, role) in listeners {
        let listener = TcpListener::from_std(listener).map_err(|e| format!("shard {}: listener: {e}", ctx.id))?;
        accepting.push(accept_loop(listener, role, ctx.clone()));
    }
    let accept_all = join_all(accepting);
    let stop = std::pin::pin!(control.next());
    if let Either::Left(..) = select(std::pin::pin!(accept_all), stop).await {
        return Err(format!("shard {}: all listeners failed", ctx.id));
    }
    // Dropping the accept loops closed this shard's listeners.
    let open = ctx.open_connections();
    tracing::debug!(shard = ctx.id, open, "draining");
    ctx.start_drain();
    ctx.all_closed().await;
    tracing::debug!(shard = ctx.id, "drained");
    Ok(())
}

async fn accept_loop(listener: TcpListener, role: ListenerRole, ctx: Rc<ShardCtx>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let key = ctx.register(stream.as_raw_fd());
                let ctx = ctx.clone();
                monoio::spawn(async move {
                    let served = AssertUnwindSafe(crate::proto::serve_connection(stream, peer, ctx.clone(), key, role))
                        .catch_unwind()
                        .await;
                    if served.is_err() {
                        tracing::error!(shard = ctx.id, %peer, "connection task panicked; connection dropped");
                    }
                    ctx.unregister(key);
                });
            }
            Err(e) => {
                tracing::warn!(shard = ctx.id, error = %e, "accept failed");
                monoio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}
