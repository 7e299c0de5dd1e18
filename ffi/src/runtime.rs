//! The SDK's tokio runtime: one per process, started on first use.
//!
//! Foreign executors (asyncio, Kotlin coroutines, Swift concurrency) poll the futures
//! UniFFI hands them; none of them is a tokio runtime, and the SDK's client needs one
//! (QUIC timers, sockets, its own tasks). So each exported `async` call spawns its work
//! here and the foreign future only awaits the task's completion.

use std::future::Future;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

use crate::ConclaveError;

/// The runtime, owned here until [`shutdown`] takes it.
static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);
/// Its handle, for spawning; outlives a shutdown (spawning then fails cleanly).
static HANDLE: OnceLock<Handle> = OnceLock::new();
/// How long [`shutdown`] waits for the runtime's tasks and threads to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Worker threads of the runtime: one per core, at least two (so that a listener
/// call that takes a while never stalls every client at once), at most eight (an app
/// process runs a handful of clients, not a server's load).
fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .clamp(2, 8)
}

/// A handle on the runtime every client of this process runs on, started on first
/// use.
///
/// # Panics
/// If the operating system refuses to start its threads, the first call panics: the
/// SDK cannot run at all without them, and there is no caller to hand an error to.
pub fn runtime_handle() -> &'static Handle {
    HANDLE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .thread_name("conclave-sdk")
            .enable_all()
            .build()
            .expect("invariant: the OS can start the SDK runtime's threads");
        let handle = runtime.handle().clone();
        *RUNTIME.lock().unwrap_or_else(PoisonError::into_inner) = Some(runtime);
        handle
    })
}

/// Shuts the SDK down for good, for the process's exit: no listener is called any
/// more ([`crate::client::stop_event_delivery`]), every client's tasks end and the
/// runtime's threads are joined (waiting at most 2 s). Calls made afterwards fail with
/// [`ConclaveError::Closed`]. The Python package calls it from `atexit`: an interpreter
/// that is finalizing ends any thread that calls into it, which would abort the
/// process if it were one of the SDK's. Call it from the app's exit hook elsewhere,
/// never from a listener.
#[uniffi::export]
pub fn shutdown() {
    crate::client::stop_event_delivery();
    let runtime = RUNTIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(runtime) = runtime {
        runtime.shutdown_timeout(SHUTDOWN_WAIT);
    }
}

/// Runs `work` on the SDK runtime and waits for it from any executor. A panic inside
/// it (a bug: the SDK never panics on network input) becomes
/// [`ConclaveError::Internal`] instead of unwinding into foreign code; after
/// [`shutdown`] it is [`ConclaveError::Closed`].
pub(crate) async fn on_runtime<T, F>(work: F) -> Result<T, ConclaveError>
where
    F: Future<Output = Result<T, ConclaveError>> + Send + 'static,
    T: Send + 'static,
{
    // If the app cancels the call (drops the foreign future: an asyncio timeout, a
    // cancelled coroutine or Task), the work is cancelled too, rather than, say, a
    // `connect` finishing unseen and delivering events for a client nobody holds.
    let mut task = AbortOnDrop(runtime_handle().spawn(work));
    match (&mut task.0).await {
        Ok(result) => result,
        Err(e) if e.is_cancelled() => Err(ConclaveError::Closed),
        Err(e) => Err(ConclaveError::Internal {
            detail: format!("an SDK task failed: {e}"),
        }),
    }
}

/// A spawned task that is aborted when its handle is dropped unfinished.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        // Nothing if the task already finished.
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_on_the_sdk_runtime_from_another_executor() {
        // A plain thread with no tokio context stands in for a foreign executor.
        let value = std::thread::spawn(|| {
            let fut = on_runtime(async {
                // `Handle::current` panics outside a runtime: this runs inside one.
                let _ = tokio::runtime::Handle::current();
                Ok(7)
            });
            futures_lite_block_on(fut)
        })
        .join()
        .expect("the thread ran");
        assert_eq!(value.ok(), Some(7));
    }

    #[test]
    fn a_panicking_task_is_an_internal_error_not_an_unwind() {
        let result = futures_lite_block_on(on_runtime(async {
            #[allow(clippy::panic)]
            if std::hint::black_box(true) {
                panic!("a bug");
            }
            Ok(())
        }));
        assert!(matches!(result, Err(ConclaveError::Internal { .. })));
    }

    #[test]
    fn an_abandoned_call_cancels_its_work() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let finished = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        let mut call = Box::pin(on_runtime(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        }));
        // Polled once (the work is spawned), then dropped, as a cancelled await is.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending());
        drop(call);
        // Long past when the work would have finished: only a bound, never a failure
        // on a slow machine (the work would then not have run either way).
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !finished.load(Ordering::SeqCst),
            "the work ran on after its call was dropped"
        );
    }

    /// Polls a future to completion on the current thread without any runtime, as a
    /// foreign executor would.
    fn futures_lite_block_on<F: Future>(fut: F) -> F::Output {
        use std::sync::Arc;
        use std::task::{Context, Poll, Wake, Waker};
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    }
}
