//! Shards: one thread per core, each with its own runtime, listeners,
//! connections and handler instances. Nothing on the request path is shared.

pub(crate) mod bus;
mod ctx;
mod driver;
pub(crate) mod services;

use std::net::TcpListener as StdTcpListener;
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{Either, join_all, select};
use monoio::blocking::DefaultThreadPool;
use monoio::net::TcpListener;

pub(crate) use bus::Control;
pub(crate) use ctx::{AdminRoutes, Protocols, Route, ShardCtx, Site, panic_message};
use services::{GlobalSubscriber, ShardServices};

use crate::apps::static_files::StaticFiles;
use crate::config::{IoMode, Limits};
use crate::mount::{HandlerFactory, Mount, MountSpec, MountTable, ShardInfo, Target};
use crate::observe::metrics::ShardMetrics;
use crate::observe::peers::{PUBLISH_EVERY, Peers};
use crate::observe::{LOG_FLUSH_EVERY, RequestLog, ShardLog};
use crate::proto::ListenerRole;
use crate::state::{Driver, SharedState};

/// How long idle keep-alive connections stay open once draining starts: a
/// request that arrives meanwhile is answered (with `Connection: close`)
/// instead of meeting a connection closed under it.
pub(crate) const DRAIN_IDLE_GRACE: Duration = Duration::from_millis(500);

/// Pause after an accept error such as EMFILE, so a full fd table does not spin the shard.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

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
    pub(crate) state: SharedState,
    pub(crate) subscribers: Arc<Vec<GlobalSubscriber>>,
    /// The request log, when it is on.
    pub(crate) request_log: Option<Arc<RequestLog>>,
    /// The admin endpoints, for the admin listener.
    pub(crate) admin: Option<Arc<dyn HandlerFactory>>,
    /// Where the admin endpoints are mounted on the main listeners, if they are.
    pub(crate) admin_mount: Option<String>,
    /// The other workers' metrics, with more than one worker.
    pub(crate) peers: Option<Arc<Peers>>,
    /// Told once the shard accepts on its listeners, or why it could not start.
    pub(crate) started: crossbeam_channel::Sender<(usize, Result<(), String>)>,
}

/// A running shard seen from the thread that started it.
pub(crate) struct ShardHandle {
    pub(crate) thread: JoinHandle<()>,
}

/// Starts a shard thread. `on_exit` runs on the shard thread when it ends, with
/// an error message if the shard could not run.
pub(crate) fn spawn(
    plan: ShardPlan,
    on_exit: impl FnOnce(usize, Option<String>) + Send + 'static,
) -> std::io::Result<ShardHandle> {
    let id = plan.info.id;
    let thread = std::thread::Builder::new().name(format!("skitai-shard-{id}")).spawn(move || {
        let _exit = ShardExit { state: plan.state.clone(), id };
        let started = plan.started.clone();
        // A panic that escapes the shard (its set-up, or a task's) ends it
        // with an error like any other failure, so the server neither waits
        // for its start-up word nor for its exit in vain.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_shard(plan)))
            .unwrap_or_else(|panic| Err(format!("shard {id} panicked: {}", ctx::panic_message(&*panic))));
        if let Err(error) = &result {
            // Read only while the server starts (a shard that failed later
            // already said it was up); nobody may be listening any more.
            let _ = started.send((id, Err(error.clone())));
        }
        on_exit(id, result.err());
    })?;
    Ok(ShardHandle { thread })
}

/// Runs when a shard thread ends, also by a panic: its inbox takes no more
/// messages and drops what is left (normally nothing: a shard that drains
/// runs its queue first), and `status` shows it exited.
struct ShardExit {
    state: SharedState,
    id: usize,
}

impl Drop for ShardExit {
    fn drop(&mut self) {
        self.state.bus().close_and_discard(self.id);
        set_driver(&self.state, self.id, Driver::Exited);
    }
}

/// Records shard `id`'s driver in the state file (for `skitai status`).
fn set_driver(state: &SharedState, id: usize, driver: Driver) {
    let line = state.shard_line(id);
    state.file().u32_at(line + crate::state::layout::shard::DRIVER).store(driver as u32, Ordering::Relaxed);
}

fn run_shard(plan: ShardPlan) -> Result<(), String> {
    let ShardPlan {
        info,
        core,
        io,
        limits,
        devel,
        listeners,
        protocols,
        mounts,
        pool,
        state,
        subscribers,
        request_log,
        admin,
        admin_mount,
        peers,
        started,
    } = plan;
    let pinned = core.is_some_and(core_affinity::set_for_current);
    let chosen = Rc::new(std::cell::Cell::new("?"));
    let chosen_in_runtime = chosen.clone();
    let report = |choice: &driver::DriverChoice| {
        chosen.set(choice.name);
        let core = core.filter(|_| pinned).map_or_else(|| "unpinned".to_owned(), |c| format!("core {}", c.id));
        tracing::info!("shard {}: driver={} ({}), {core}", info.id, choice.name, choice.why);
        set_driver(&state, info.id, if choice.name == "epoll" { Driver::Epoll } else { Driver::IoUring });
    };
    let shard_state = state.clone();
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
        let admin = admin.map(|factory| {
            MountTable::new(vec![Mount { prefix: Rc::from("/"), target: Target::Handler(factory.build(&info)) }])
        });
        let metrics = ShardMetrics::new(table.prefixes());
        metrics.set_driver(chosen_in_runtime.get());
        let log = request_log.map(ShardLog::new);
        let services = ShardServices::new(info, shard_state, &subscribers, metrics, log, peers);
        let ctx = Rc::new(ShardCtx::new(
            info.id,
            limits,
            devel,
            protocols,
            table,
            AdminRoutes { listener: admin, mount: admin_mount.map(Rc::from) },
            services,
        ));
        shard_main(ctx, listeners, started).await
    })
    .map_err(|e| format!("shard {}: {e}", info.id))?
}

async fn shard_main(
    ctx: Rc<ShardCtx>,
    listeners: Vec<(StdTcpListener, ListenerRole)>,
    started: crossbeam_channel::Sender<(usize, Result<(), String>)>,
) -> Result<(), String> {
    let mut accepting = Vec::with_capacity(listeners.len());
    for (listener, role) in listeners {
        let listener = TcpListener::from_std(listener).map_err(|e| format!("shard {}: listener: {e}", ctx.id))?;
        if role == ListenerRole::Admin {
            // The admin listener stays open while the shard drains, so
            // `/readyz` can say so; it closes when the shard's runtime ends.
            monoio::spawn(accept_loop(listener, role, ctx.clone(), false));
        } else {
            accepting.push(accept_loop(listener, role, ctx.clone(), true));
        }
    }
    let _ = started.send((ctx.id, Ok(())));
    drop(started);
    monoio::spawn(bus_loop(ctx.clone()));
    if ctx.services().log.is_some() {
        monoio::spawn(log_flush_loop(ctx.clone()));
    }
    if ctx.services().peers.is_some() {
        monoio::spawn(publish_metrics_loop(ctx.clone()));
    }
    // The accept loops end when a control message (drain, stop) comes;
    // ending, they close this shard's listeners.
    join_all(accepting).await;
    let control = ctx.control_requested().await;
    if control == Control::Drain {
        let open = ctx.open_connections();
        tracing::debug!(shard = ctx.id, open, "draining");
        ctx.start_drain();
        let idle = ctx.clone();
        monoio::spawn(async move {
            monoio::time::sleep(DRAIN_IDLE_GRACE).await;
            idle.shut_idle();
        });
        select(std::pin::pin!(ctx.all_closed()), std::pin::pin!(ctx.stop_requested())).await;
    }
    // Refuse new messages, then run what was already queued.
    ctx.services().state.bus().close(ctx.id);
    while handle_mail(&ctx, bus::BATCH) {}
    if let Some(log) = &ctx.services().log {
        log.flush();
    }
    tracing::debug!(shard = ctx.id, "drained");
    Ok(())
}

/// Hands the shard's request log lines to the log thread every
/// [`LOG_FLUSH_EVERY`], so a quiet shard's lines do not wait for a full batch.
async fn log_flush_loop(ctx: Rc<ShardCtx>) {
    loop {
        monoio::time::sleep(LOG_FLUSH_EVERY).await;
        if let Some(log) = &ctx.services().log {
            log.flush();
        }
    }
}

/// With more than one worker: publishes this shard's metrics for the other
/// workers each second, until the shard drains (a draining shard's numbers
/// are about to be replaced by its successor's).
async fn publish_metrics_loop(ctx: Rc<ShardCtx>) {
    loop {
        monoio::time::sleep(PUBLISH_EVERY).await;
        let services = ctx.services();
        let Some(peers) = &services.peers else { return };
        if ctx.draining() {
            return;
        }
        if let Err(e) = peers.publish(&services.snapshot(ctx.id)) {
            tracing::debug!(shard = ctx.id, "cannot publish metrics: {e}");
        }
    }
}

/// Delivers this shard's bus messages as they arrive, for the shard's life.
async fn bus_loop(ctx: Rc<ShardCtx>) {
    loop {
        ctx.services().state.bus().ready(ctx.id).await;
        if handle_mail(&ctx, bus::BATCH) {
            // More is queued: let connections run before the next batch.
            yield_now().await;
        }
    }
}

/// Handles control messages, then up to `limit` messages; true if more remain.
fn handle_mail(ctx: &ShardCtx, limit: usize) -> bool {
    let services = ctx.services();
    let bus = services.state.bus();
    while let Some(control) = bus.pop_control(ctx.id) {
        ctx.request_control(control);
    }
    for _ in 0..limit {
        match bus.pop_message(ctx.id) {
            Some(bus::Message::Broadcast(event)) => {
                bus.count_received(ctx.id);
                services.deliver(&event);
            }
            Some(bus::Message::Run(job)) => job(&services.info),
            None => return false,
        }
    }
    true
}

/// Returns `Pending` once (waking itself), so other tasks on the shard run.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// Accepts connections on `listener` and serves each in a task of its own;
/// with `until_control`, until a control message (drain, stop) comes. Then
/// the accept in flight is cancelled and awaited: on io_uring it may have
/// taken a connection already, which is served rather than dropped (a
/// reload would otherwise reset it).
async fn accept_loop(listener: TcpListener, role: ListenerRole, ctx: Rc<ShardCtx>, until_control: bool) {
    let canceller = monoio::io::Canceller::new();
    loop {
        let accept = listener.cancelable_accept(canceller.handle());
        let accepted = if until_control {
            let mut accept = std::pin::pin!(accept);
            match select(accept.as_mut(), std::pin::pin!(ctx.control_requested())).await {
                Either::Left((accepted, _)) => accepted,
                Either::Right(_) => {
                    let _ = canceller.cancel();
                    if let Ok((stream, peer)) = accept.await {
                        serve_accepted(stream, peer, role, &ctx);
                    }
                    return;
                }
            }
        } else {
            accept.await
        };
        match accepted {
            Ok((stream, peer)) => serve_accepted(stream, peer, role, &ctx),
            Err(e) => {
                ctx.services().metrics.count_accept_error();
                tracing::warn!(shard = ctx.id, error = %e, "accept failed");
                monoio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// Serves an accepted connection in a task of its own (or refuses it over `max_connections`).
fn serve_accepted(stream: monoio::net::TcpStream, peer: std::net::SocketAddr, role: ListenerRole, ctx: &Rc<ShardCtx>) {
    // The admin listener is never refused: health checks must answer under load.
    if role != ListenerRole::Admin && ctx.open_connections() >= ctx.limits.max_connections {
        refuse_connection(stream, role, ctx);
        return;
    }
    let _ = stream.set_nodelay(true);
    let key = ctx.register(stream.as_raw_fd());
    let ctx = ctx.clone();
    monoio::spawn(async move {
        let served =
            AssertUnwindSafe(crate::proto::serve_connection(stream, peer, ctx.clone(), key, role)).catch_unwind().await;
        if served.is_err() {
            tracing::error!(shard = ctx.id, %peer, "connection task panicked; connection dropped");
        }
        ctx.unregister(key);
    });
}

/// The answer to a connection over the shard's `max_connections`.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Content-Length: 50\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
{\"code\": 50300, \"message\": \"too many connections\"}";

/// Refuses a connection over the shard's `max_connections`: a plain HTTP
/// connection gets a 503 (best effort, never waited for), TLS ones are closed.
fn refuse_connection(stream: monoio::net::TcpStream, role: ListenerRole, ctx: &ShardCtx) {
    ctx.services().metrics.count_shed(crate::observe::metrics::Shed::Connections);
    let plain = role != ListenerRole::Main || ctx.protocols.tls.is_none();
    if plain {
        use monoio::io::AsyncWriteRentExt;
        monoio::spawn(async move {
            let mut stream = stream;
            let _ = monoio::time::timeout(Duration::from_secs(1), stream.write_all(REFUSAL)).await;
        });
    }
}
