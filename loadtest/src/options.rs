//! Command-line options (`conclave-loadtest --help`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::LoadError;

/// Simulates meetings of real Conclave SDK clients against an SFU and reports loss,
/// latency, jitter, throughput, join and rekey times, and the SFU's CPU and memory.
///
/// Every participant is a real client: it registers, uploads prekeys, receives its
/// invitation in a container, joins the room and sends SFrame-encrypted media over
/// QUIC datagrams. Frames carry their send time inside the encryption; latency is
/// measured after decryption.
#[derive(Debug, Clone, Parser)]
#[command(name = "conclave-loadtest", version, about, long_about = None)]
#[allow(clippy::struct_excessive_bools)] // independent switches of a CLI
pub struct Options {
    /// Start an SFU in this process on 127.0.0.1 (the default without --server).
    #[arg(long, conflicts_with_all = ["server", "local_cluster"])]
    pub embedded: bool,
    /// Address of a running SFU (UDP), e.g. 10.0.0.5:4433. Repeat it (or separate
    /// addresses by commas) for the nodes of a cluster: participants connect first to
    /// each in turn and know the others.
    #[arg(long, value_name = "ADDR", value_delimiter = ',')]
    pub server: Vec<SocketAddr>,
    /// Start a cluster of N nodes in this process, on 127.0.0.1 … 127.0.0.N, sharing a
    /// throwaway PostgreSQL started the way the tests start it (initdb and postgres
    /// must be installed), and spread the participants over them: a demo of cluster
    /// mode, not a measurement of separate machines.
    #[arg(long, value_name = "N", conflicts_with = "server")]
    pub local_cluster: Option<usize>,
    /// SHA-256 fingerprint of the server's certificate (64 hex digits), as printed by
    /// the SFU in development mode.
    #[arg(
        long,
        value_name = "SHA256",
        requires = "server",
        conflicts_with = "ca"
    )]
    pub pin: Option<String>,
    /// CA certificate file (PEM) that signed the server's certificate.
    #[arg(long, value_name = "FILE", requires = "server")]
    pub ca: Option<PathBuf>,
    /// Name the server certificate must be valid for (with --ca).
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    pub server_name: String,
    /// Prometheus endpoint of the SFU at --server, e.g. http://10.0.0.5:9464/metrics
    /// (read before and after the measured phase).
    #[arg(long, value_name = "URL", requires = "server")]
    pub metrics_url: Option<String>,
    /// Process id of the SFU at --server when it runs on this machine: its CPU time and
    /// peak memory are then reported.
    #[arg(long, value_name = "PID", requires = "server")]
    pub sfu_pid: Option<u32>,
    /// Shards of the in-process SFU: threads sharing its port, each serving its share
    /// of the rooms (as `conclave-sfu --worker-threads`); also the `--baseline` relay's
    /// worker threads. A local cluster's nodes run on this many threads.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub sfu_threads: usize,
    /// The in-process SFU's pack window for small media datagrams, ms (as
    /// `timing.media_pack_ms`; 0 sends each datagram at once).
    #[arg(long, value_name = "MS", default_value_t = conclave_sfu::config::DEFAULT_MEDIA_PACK_MS)]
    pub sfu_pack_ms: u64,
    /// Worker threads of the participants' runtime (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub client_threads: Option<usize>,

    /// Number of meetings.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub meetings: usize,
    /// Participants per meeting (at the start; churn changes it).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub participants: usize,
    /// Length of the measured phase, seconds (after everyone has joined).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub duration: f64,
    /// Audio frames per second per sender.
    #[arg(long, value_name = "FPS", default_value_t = 50)]
    pub audio_fps: u32,
    /// Bytes per audio frame (at least 24: the frame header).
    #[arg(long, value_name = "BYTES", default_value_t = 120)]
    pub audio_bytes: usize,
    /// Share of participants that send audio, 0 to 1 (everyone receives).
    #[arg(long, value_name = "SHARE", default_value_t = 1.0)]
    pub senders: f64,
    /// Participants per meeting that also send video.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub video_senders: usize,
    /// Video bit rate per video sender, kbit/s.
    #[arg(long, value_name = "KBPS", default_value_t = 1_000)]
    pub video_kbps: u32,
    /// Video frames per second per video sender.
    #[arg(long, value_name = "FPS", default_value_t = 30)]
    pub video_fps: u32,
    /// Participants connecting (registering) per second while meetings fill up.
    #[arg(long, value_name = "PER_SECOND", default_value_t = 25.0)]
    pub ramp: f64,
    /// Churn events per minute during the measured phase, cycling leave, join, remove,
    /// join in random meetings (each leave and remove is a rekey).
    #[arg(long, value_name = "PER_MINUTE", default_value_t = 0.0)]
    pub churn: f64,
    /// Key leaders wrap no Rekey ahead of time (`ClientConfig::prepare_rekeys_after`
    /// off): every rekey fetches prekeys and wraps for everyone when a participant
    /// departs, as before issue 17. For comparing rekey times.
    #[arg(long)]
    pub no_rekey_preparation: bool,
    /// Chat messages per minute per participant during the measured phase: reliable
    /// in-meeting messages (end-to-end encrypted and signed, relayed by the SFU).
    #[arg(long, value_name = "PER_MINUTE", default_value_t = 0.0)]
    pub chat_per_minute: f64,
    /// Bytes of each chat message body (at least 20: the stamp; at most 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 200)]
    pub chat_bytes: usize,
    /// Seed of every random choice (who sends, phases, churn targets).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// After joining, how long a participant waits before its frames count, ms (lets
    /// the meeting settle on the epoch it joined at).
    #[arg(long, value_name = "MS", default_value_t = 1_000)]
    pub settle_ms: u64,

    /// Also run the same fan-out through a bare QUIC datagram relay (no directory,
    /// rooms or encryption beyond QUIC) and report the SFU's efficiency against it.
    #[arg(long)]
    pub baseline: bool,
    /// The baseline relay's pack window, ms: it holds datagrams of at most half a
    /// packet for each receiver and hands them to QUIC together every this many ms,
    /// as the SFU does, so that its clients receive as many frames per UDP datagram.
    /// 0 (the default) forwards each datagram as it comes.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub baseline_pack_ms: u64,
    /// Write the report as JSON (schema in docs/loadtest.md).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with charts.
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// No live progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl Options {
    /// Checks ranges and combinations clap cannot express.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::Options(m));
        if self.meetings == 0 || self.meetings > 1_000 {
            return bad(format!(
                "--meetings must be 1..=1000, got {}",
                self.meetings
            ));
        }
        if !(2..=1_000).contains(&self.participants) {
            return bad(format!(
                "--participants must be 2..=1000 (the SFU's room limit), got {}",
                self.participants
            ));
        }
        if !(self.duration.is_finite() && self.duration > 0.0 && self.duration <= 86_400.0) {
            return bad(format!(
                "--duration must be in (0, 86400] s, got {}",
                self.duration
            ));
        }
        if !(crate::payload::HEADER_LEN..=60_000).contains(&self.audio_bytes) {
            return bad(format!(
                "--audio-bytes must be {}..=60000, got {}",
                crate::payload::HEADER_LEN,
                self.audio_bytes
            ));
        }
        if self.audio_fps > 1_000 || self.video_fps > 240 {
            return bad("--audio-fps must be ≤ 1000 and --video-fps ≤ 240".into());
        }
        if !(0.0..=1.0).contains(&self.senders) {
            return bad(format!(
                "--senders is a share in [0, 1], got {}",
                self.senders
            ));
        }
        if self.video_senders > self.participants {
            return bad("--video-senders cannot exceed --participants".into());
        }
        if self.video_senders > 0 && (self.video_fps == 0 || self.video_kbps == 0) {
            return bad("video needs --video-fps and --video-kbps above 0".into());
        }
        if self.video_senders > 0 && self.video_frame_bytes() > 60_000 {
            return bad(format!(
                "a video frame would be {} bytes (--video-kbps / --video-fps); at most 60000",
                self.video_frame_bytes()
            ));
        }
        if !(self.ramp.is_finite() && self.ramp > 0.0) {
            return bad(format!("--ramp must be above 0, got {}", self.ramp));
        }
        if !(self.churn.is_finite() && (0.0..=600.0).contains(&self.churn)) {
            return bad(format!(
                "--churn must be 0..=600 per minute, got {}",
                self.churn
            ));
        }
        if !(self.chat_per_minute.is_finite() && (0.0..=6_000.0).contains(&self.chat_per_minute)) {
            return bad(format!(
                "--chat-per-minute must be 0..=6000, got {}",
                self.chat_per_minute
            ));
        }
        if !(20..=conclave_sdk::client::MAX_RELIABLE_BODY_BYTES).contains(&self.chat_bytes) {
            return bad(format!(
                "--chat-bytes must be 20..=4096, got {}",
                self.chat_bytes
            ));
        }
        if self.local_cluster.is_some_and(|n| !(2..=8).contains(&n)) {
            return bad("--local-cluster takes 2 to 8 nodes".into());
        }
        if self.server.len() > 16 {
            return bad("at most 16 --server addresses".into());
        }
        if self.sfu_pack_ms > conclave_sfu::config::MAX_MEDIA_PACK_MS
            || self.baseline_pack_ms > conclave_sfu::config::MAX_MEDIA_PACK_MS
        {
            return bad(format!(
                "--sfu-pack-ms and --baseline-pack-ms take 0 to {} ms",
                conclave_sfu::config::MAX_MEDIA_PACK_MS
            ));
        }
        if self.sfu_threads == 0 || self.client_threads == Some(0) {
            return bad("thread counts must be at least 1".into());
        }
        Ok(())
    }

    /// Bytes per video frame: the bit rate spread over the frame rate (at least the
    /// frame header).
    #[must_use]
    pub fn video_frame_bytes(&self) -> usize {
        let per_s = u64::from(self.video_kbps) * 1_000 / 8;
        let per_frame = per_s / u64::from(self.video_fps.max(1));
        usize::try_from(per_frame)
            .unwrap_or(usize::MAX)
            .max(crate::payload::HEADER_LEN)
    }

    /// Audio senders per meeting.
    #[must_use]
    pub fn audio_senders(&self) -> usize {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )] // share in [0, 1] of a count ≤ 1000
        let n = (self.participants as f64 * self.senders).round() as usize;
        n.min(self.participants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Options {
        let mut all = vec!["conclave-loadtest"];
        all.extend_from_slice(args);
        Options::try_parse_from(all).unwrap()
    }

    #[test]
    fn the_documented_command_parses_and_validates() {
        let o = parse(&[
            "--embedded",
            "--meetings",
            "10",
            "--participants",
            "50",
            "--duration",
            "30",
            "--json",
            "report.json",
        ]);
        o.validate().unwrap();
        assert_eq!(o.audio_senders(), 50);
        assert_eq!(o.audio_fps, 50);
        assert_eq!(o.audio_bytes, 120);
    }

    #[test]
    fn out_of_range_options_are_refused_with_the_reason() {
        let o = parse(&["--participants", "1"]);
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("--participants")
        );
        let o = parse(&["--audio-bytes", "8"]);
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("--audio-bytes")
        );
        let o = parse(&["--senders", "1.5"]);
        assert!(o.validate().is_err());
        assert!(Options::try_parse_from(["x", "--embedded", "--server", "127.0.0.1:1"]).is_err());
        assert!(
            Options::try_parse_from(["x", "--pin", "00"]).is_err(),
            "--pin needs --server"
        );
        assert!(parse(&["--local-cluster", "1"]).validate().is_err());
        assert!(
            Options::try_parse_from(["x", "--local-cluster", "2", "--server", "127.0.0.1:1"])
                .is_err()
        );
    }

    #[test]
    fn several_servers_are_the_nodes_of_a_cluster() {
        let o = parse(&[
            "--server",
            "127.0.0.1:4433,127.0.0.2:4433",
            "--server",
            "127.0.0.3:4433",
            "--pin",
            &"ab".repeat(32),
        ]);
        o.validate().unwrap();
        assert_eq!(o.server.len(), 3);
        assert_eq!(o.server[2], "127.0.0.3:4433".parse().unwrap());
    }

    #[test]
    fn video_frames_follow_the_bit_rate() {
        let o = parse(&[
            "--video-senders",
            "1",
            "--video-kbps",
            "1000",
            "--video-fps",
            "25",
        ]);
        assert_eq!(o.video_frame_bytes(), 5_000);
        o.validate().unwrap();
    }
}
