//! What the load test writes to stderr besides the summary: the log lines (through
//! `tracing`) and the progress bar.
//!
//! * Colour (ANSI codes) only when stderr is a terminal and `NO_COLOR` is unset or
//!   empty ([`ansi_enabled`]); redirected to a file, the log is plain text.
//! * The progress bar only when stderr is a terminal and `--quiet` is not given
//!   ([`progress_visible`]). It has no colours.
//! * Log filter: `RUST_LOG` when set (it always wins); otherwise [`RUN_FILTER`]
//!   (warnings and errors) while participants connect and are measured, and
//!   [`TEARDOWN_FILTER`] once the measurement is over. Stopping a hundred
//!   participants and their server makes the SDK and the server log what is, then,
//!   expected (connections closing, events dropped because their reader is gone,
//!   directory refusals of departed devices); those warnings would bury the
//!   summary. Errors still show.

use std::ffi::OsStr;
use std::io::IsTerminal;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The default filter while the run sets up and measures.
pub const RUN_FILTER: &str = "warn";

/// The default filter once the measurement is over: the load test's own warnings
/// still show; the SDK and the server only show errors.
pub const TEARDOWN_FILTER: &str = "warn,conclave_sdk=error,conclave_sfu=error";

/// Whether log lines get ANSI colour: only on a terminal, and never when
/// `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
#[must_use]
pub fn ansi_enabled(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Whether the live progress bar is drawn: only on a terminal, and not with
/// `--quiet`.
#[must_use]
pub fn progress_visible(quiet: bool, stderr_is_terminal: bool) -> bool {
    !quiet && stderr_is_terminal
}

/// Where the log filter comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterSource {
    /// `RUST_LOG`, as given: used for the whole run.
    User(String),
    /// [`RUN_FILTER`], then [`TEARDOWN_FILTER`].
    Default,
}

/// `RUST_LOG` wins when it is set and not blank.
#[must_use]
pub fn filter_source(rust_log: Option<&str>) -> FilterSource {
    match rust_log.map(str::trim) {
        Some(s) if !s.is_empty() => FilterSource::User(s.to_owned()),
        _ => FilterSource::Default,
    }
}

/// The installed log subscriber; [`Logging::quiet_teardown`] switches the default
/// filter to [`TEARDOWN_FILTER`].
pub struct Logging {
    /// `None` when the user's `RUST_LOG` is in charge.
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

impl Logging {
    /// Installs the global subscriber (stderr, colour as [`ansi_enabled`] decides,
    /// filter as [`filter_source`] decides). An unparsable `RUST_LOG` is reported
    /// on stderr and replaced by the default filter.
    #[must_use]
    pub fn init() -> Self {
        let stderr = std::io::stderr();
        let no_color = std::env::var_os("NO_COLOR");
        let ansi = ansi_enabled(stderr.is_terminal(), no_color.as_deref());
        let rust_log = std::env::var("RUST_LOG").ok();
        let user = match filter_source(rust_log.as_deref()) {
            FilterSource::User(s) => match EnvFilter::try_new(&s) {
                Ok(filter) => Some(filter),
                Err(e) => {
                    // Before the subscriber exists: stderr is the only channel.
                    eprintln!(
                        "conclave-loadtest: RUST_LOG={s:?} ignored ({e}); using {RUN_FILTER:?}"
                    );
                    None
                }
            },
            FilterSource::Default => None,
        };
        let (logging, subscriber) = Self::build(user, ansi, std::io::stderr);
        // A second subscriber (only possible in tests) is no reason to stop.
        let _ = subscriber.try_init();
        logging
    }

    /// The subscriber: `user`'s filter for the whole run, or the reloadable
    /// default; log lines to `writer`, with colour if `ansi`.
    fn build<W>(
        user: Option<EnvFilter>,
        ansi: bool,
        writer: W,
    ) -> (Self, impl tracing::Subscriber + Send + Sync + 'static)
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        let user_set = user.is_some();
        let (filter, handle) =
            reload::Layer::new(user.unwrap_or_else(|| EnvFilter::new(RUN_FILTER)));
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi);
        let subscriber = tracing_subscriber::registry().with(filter).with(fmt);
        let logging = Logging {
            handle: (!user_set).then_some(handle),
        };
        (logging, subscriber)
    }

    /// The measurement is over: from now on the SDK's and the server's warnings
    /// are expected consequences of stopping. No effect under `RUST_LOG`.
    pub fn quiet_teardown(&self) {
        if let Some(handle) = &self.handle {
            // Fails only if the subscriber is gone, when nothing logs any more.
            let _ = handle.reload(EnvFilter::new(TEARDOWN_FILTER));
        }
    }
}

/// A writer into a shared buffer, for tests.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Buffer {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `log` writes under `filter`, with colour decided as for a file.
#[cfg(test)]
pub(crate) fn captured(filter: &str, log: impl FnOnce()) -> String {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(move || writer.clone())
        .with_ansi(ansi_enabled(false, None))
        .finish();
    tracing::subscriber::with_default(subscriber, log);
    buffer.text()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(ansi_enabled(true, None));
        assert!(ansi_enabled(true, Some(OsStr::new(""))), "empty = unset");
        assert!(!ansi_enabled(true, Some(OsStr::new("1"))));
        assert!(!ansi_enabled(false, None), "redirected to a file");
        assert!(!ansi_enabled(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn progress_only_on_a_terminal_and_not_quiet() {
        assert!(progress_visible(false, true));
        assert!(!progress_visible(true, true));
        assert!(!progress_visible(false, false));
    }

    #[test]
    fn rust_log_wins_unless_blank() {
        assert_eq!(
            filter_source(Some("conclave_sdk=debug")),
            FilterSource::User("conclave_sdk=debug".to_owned())
        );
        assert_eq!(filter_source(Some("  ")), FilterSource::Default);
        assert_eq!(filter_source(None), FilterSource::Default);
    }

    fn teardown_noise() {
        tracing::warn!(target: "conclave_sdk::client::client_core::meetings", "directory entry refused");
        tracing::warn!(target: "conclave_sdk::client::shared", "meeting event queue full or closed; event dropped");
        tracing::warn!(target: "conclave_sfu::server", "connections did not finish");
        tracing::warn!(target: "conclave_loadtest::baseline", "baseline run incomplete");
        tracing::error!(target: "conclave_sfu::server", "store failure");
    }

    #[test]
    fn the_teardown_filter_quiets_sdk_and_server_warnings_only() {
        let during = captured(RUN_FILTER, teardown_noise);
        assert_eq!(during.matches("WARN").count(), 4, "{during}");
        let after = captured(TEARDOWN_FILTER, teardown_noise);
        assert_eq!(after.matches("WARN").count(), 1, "{after}");
        assert!(after.contains("baseline run incomplete"), "{after}");
        assert!(
            after.contains("ERROR") && after.contains("store failure"),
            "{after}"
        );
        assert!(!after.contains('\u{1b}'), "no colour in a file: {after:?}");
    }

    fn around_teardown(logging: &Logging) {
        tracing::warn!(target: "conclave_sdk::client::shared", "dropped while measuring");
        logging.quiet_teardown();
        tracing::warn!(target: "conclave_sdk::client::shared", "dropped at teardown");
        tracing::warn!(target: "conclave_loadtest::sim", "own warning at teardown");
    }

    #[test]
    fn quiet_teardown_reloads_the_default_filter_but_never_rust_log() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let (logging, subscriber) = Logging::build(None, false, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || around_teardown(&logging));
        let out = buffer.text();
        assert!(out.contains("dropped while measuring"), "{out}");
        assert!(!out.contains("dropped at teardown"), "{out}");
        assert!(out.contains("own warning at teardown"), "{out}");
        assert!(!out.contains('\u{1b}'), "{out:?}");

        let buffer = Buffer::default();
        let writer = buffer.clone();
        let user = Some(EnvFilter::new("warn"));
        let (logging, subscriber) = Logging::build(user, true, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || around_teardown(&logging));
        let out = buffer.text();
        assert!(out.contains("dropped at teardown"), "RUST_LOG wins: {out}");
        assert!(out.contains('\u{1b}'), "colour when asked: {out:?}");
    }
}
