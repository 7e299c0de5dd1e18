//! The SDK's tokio runtime: one per process, started on first use.
//!
//! Foreign executors (asyncio, Kotlin coroutines, Swift concurrency) poll the futures
//! UniFFI hands them; none of them is a tokio runtime, and the SDK's client needs one
//! (QUIC timers, sockets, its own tasks). So each exported `async` call spawns its work
//! here and the foreign future only awaits the task's completion.

use std::future::Future;
use std::sync::OnceLock;

use crate::ConclaveError;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// Worker threads of the runtime: one per core, at least two (so that a listener
/// call that takes a while never stalls every client at once), at most eight (an app
/// process runs a handful of clients, not a server's load).
fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .clamp(2, 8)
}

/// The runtime every client of this process runs on.
///
/// # Panics
/// If the operating system refuses to start its threads, the first call panics: the
/// SDK cannot run at all without them, and there is no caller to hand an error to.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .thread_name("conclave-sdk")
            .enable_all()
            .build()
            .expect("invariant: the OS can start the SDK runtime's threads")
    })
}

/// Runs `work` on the SDK runtime and waits for it from any executor. A panic inside
/// it (a bug: the SDK never panics on network input) becomes
/// [`ConclaveError::Internal`] instead of unwinding into foreign code.
pub(crate) async fn on_runtime<T, F>(work: F) -> Result<T, ConclaveError>
where
    F: Future<Output = Result<T, ConclaveError>> + Send + 'static,
    T: Send + 'static,
{
    match runtime().spawn(work).await {
        Ok(result) => result,
        Err(e) => Err(ConclaveError::Internal {
            detail: format!("an SDK task failed: {e}"),
        }),
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
