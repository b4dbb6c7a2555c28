//! Syslog over TCP: RFC 5424 messages in octet-counted frames over TLS (RFC 5425), or RFC 3164
//! (BSD) lines for old collectors, over TLS or plain TCP.
//!
//! Syslog has no acknowledgement. So that an outage loses nothing, each batch goes over a
//! connection of its own, which Cordon then closes (TLS `close_notify`, then FIN) and waits for the
//! collector to close in turn: a collector closes its side only once it has read up to Cordon's
//! close, so the orderly end of the connection says it took every message. A connection that is
//! refused, reset or not closed within [`CLOSE_WAIT`] has the batch tried again (the collector
//! may then see some messages twice; each carries the event's id).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::config::{SyslogFormat, SyslogTarget};
use super::{Event, events_of};
use crate::model::outbox::OutboxEntry;
use crate::outbox::{Deliver, DeliveryError};

/// How long a connection may take to open.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// How long the collector has to close its side after Cordon closed its own.
const CLOSE_WAIT: Duration = Duration::from_secs(10);
/// The private enterprise number RFC 5612 sets aside for documentation, naming Cordon's
/// structured-data element (`cordon@32473`).
const SD_ID: &str = "cordon@32473";

/// Why a syslog destination cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("syslog tls.ca_file: cannot read {0}: {1}")]
    CaFile(String, String),
    #[error("syslog host `{0}` is not a name a certificate can carry")]
    ServerName(String),
}

/// The syslog deliverer.
pub struct Syslog {
    target: SyslogTarget,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    hostname: String,
}

impl Syslog {
    pub fn new(target: SyslogTarget) -> Result<Syslog, SyslogError> {
        let tls = match target.tls.settings() {
            None => None,
            Some(settings) => {
                let mut roots = tokio_rustls::rustls::RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                if let Some(file) = &settings.ca_file {
                    use rustls_pki_types::pem::PemObject;
                    let shown = file.display().to_string();
                    let certs = rustls_pki_types::CertificateDer::pem_file_iter(file)
                        .map_err(|e| SyslogError::CaFile(shown.clone(), e.to_string()))?;
                    for cert in certs {
                        let cert =
                            cert.map_err(|e| SyslogError::CaFile(shown.clone(), e.to_string()))?;
                        roots
                            .add(cert)
                            .map_err(|e| SyslogError::CaFile(shown.clone(), e.to_string()))?;
                    }
                }
                let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
                let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| SyslogError::CaFile("(TLS versions)".into(), e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let name = settings.server_name.unwrap_or_else(|| target.host.clone());
                let name = rustls_pki_types::ServerName::try_from(name.clone())
                    .map_err(|_| SyslogError::ServerName(name))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
            }
        };
        let hostname = target
            .hostname
            .clone()
            .unwrap_or_else(super::http::host_name);
        Ok(Syslog {
            target,
            tls,
            hostname,
        })
    }

    fn port(&self) -> u16 {
        self.target
            .port
            .unwrap_or(if self.tls.is_some() { 6514 } else { 514 })
    }

    /// The bytes of a batch, framed for the format.
    fn frames(&self, events: &[Event]) -> Vec<u8> {
        let mut out = Vec::new();
        for event in events {
            match self.target.format {
                SyslogFormat::Rfc5424 => {
                    let message = rfc5424(event, self.target.facility, &self.hostname);
                    out.extend_from_slice(format!("{} ", message.len()).as_bytes());
                    out.extend_from_slice(message.as_bytes());
                }
                SyslogFormat::Rfc3164 => {
                    out.extend_from_slice(
                        rfc3164(event, self.target.facility, &self.hostname).as_bytes(),
                    );
                    out.push(b'\n');
                }
            }
        }
        out
    }
}

/// Writes `bytes`, closes Cordon's side and waits for the collector to close its own.
async fn send_and_close<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await?;
    stream.shutdown().await?;
    let mut sink = [0u8; 512];
    tokio::time::timeout(CLOSE_WAIT, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // A collector that closes the TCP connection without TLS's close_notify (rsyslog
                // does) has still read up to Cordon's close: a FIN is an orderly end. A reset
                // is not, and fails the batch.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the collector did not close the connection",
        )
    })?
}

#[async_trait]
impl Deliver for Syslog {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), DeliveryError> {
        let events = events_of(entry)?;
        let bytes = self.frames(&events);
        let address = format!("{}:{}", self.target.host, self.port());
        let failed = |what: &str, e: std::io::Error| {
            DeliveryError::retry(format!("syslog collector {address}: {what}: {e}"))
        };
        let tcp = tokio::time::timeout(CONNECT_WAIT, TcpStream::connect(&address))
            .await
            .map_err(|_| {
                failed(
                    "connect",
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
                )
            })?
            .map_err(|e| failed("connect", e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some((connector, name)) => {
                let mut tls =
                    tokio::time::timeout(CONNECT_WAIT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| {
                            failed(
                                "TLS handshake",
                                std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
                            )
                        })?
                        .map_err(|e| failed("TLS handshake", e))?;
                send_and_close(&mut tls, &bytes)
                    .await
                    .map_err(|e| failed("send", e))
            }
            None => {
                let mut tcp = tcp;
                send_and_close(&mut tcp, &bytes)
                    .await
                    .map_err(|e| failed("send", e))
            }
        }
    }
}

/// The syslog severity for an event: its severity on Cordon's scale when it has one (9-10
/// critical, 7-8 error, 5-6 warning, 3-4 notice, else informational); audit entries are notices.
pub fn severity(event: &Event) -> u8 {
    match event.severity {
        Some(9..) => 2,
        Some(7..=8) => 3,
        Some(5..=6) => 4,
        Some(3..=4) => 5,
        Some(_) => 6,
        None => 5,
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME cordon - MSGID [cordon@32473 ...] JSON`,
/// MSGID the event type, the structured data naming the event, and the message the event as JSON.
pub fn rfc5424(event: &Event, facility: u8, hostname: &str) -> String {
    let pri = u16::from(facility.min(23)) * 8 + u16::from(severity(event));
    let mut sd = format!(
        "[{SD_ID} id=\"{}\" event=\"{}\"",
        sd_escape(&event.id),
        sd_escape(&event.event)
    );
    if let Some(incident) = &event.incident_id {
        sd.push_str(&format!(" incident=\"{}\"", sd_escape(incident)));
    }
    if let Some(run) = &event.run_id {
        sd.push_str(&format!(" run=\"{}\"", sd_escape(run)));
    }
    sd.push(']');
    format!(
        "<{pri}>1 {} {} cordon - {} {sd} {}",
        event.at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
        header_field(hostname, 255),
        event.kind.as_str(),
        serde_json::to_string(event).unwrap_or_default()
    )
}

/// One RFC 3164 message: `<PRI>Mmm dd hh:mm:ss HOSTNAME cordon: JSON`, on one line.
pub fn rfc3164(event: &Event, facility: u8, hostname: &str) -> String {
    let pri = u16::from(facility.min(23)) * 8 + u16::from(severity(event));
    format!(
        "<{pri}>{} {} cordon: {}",
        bsd_time(event.at),
        header_field(hostname, 255),
        serde_json::to_string(event).unwrap_or_default()
    )
}

/// RFC 3164's TIMESTAMP: `Mmm dd hh:mm:ss`, the day padded with a space.
fn bsd_time(at: DateTime<Utc>) -> String {
    at.format("%b %e %H:%M:%S").to_string()
}

/// A header field: printable US-ASCII without spaces, at most `max` characters (`-` when empty).
fn header_field(text: &str, max: usize) -> String {
    let field: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if field.is_empty() {
        "-".to_owned()
    } else {
        field
    }
}

/// A structured-data parameter value: `"`, `\` and `]` escaped (RFC 5424 section 6.3.3).
fn sd_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::EventType;

    fn event() -> Event {
        Event {
            id: "e-1".into(),
            kind: EventType::Incident,
            event: "incident.opened".into(),
            at: "2026-03-05T07:08:09.123456Z".parse().unwrap(),
            incident_id: Some("in\"c]1".into()),
            run_id: None,
            severity: Some(8),
            sources: vec!["falco".into()],
            data: serde_json::json!({"detail": {"alert_id": "a-1"}}),
        }
    }

    #[test]
    fn rfc5424_has_its_header_structured_data_and_the_event() {
        let line = rfc5424(&event(), 20, "web 1");
        assert!(
            line.starts_with(
                "<163>1 2026-03-05T07:08:09.123456Z web1 cordon - incident [cordon@32473 id=\"e-1\" event=\"incident.opened\" incident=\"in\\\"c\\]1\"] {"
            ),
            "{line}"
        );
        let json = &line[line.find("] {").unwrap() + 2..];
        let back: Event = serde_json::from_str(json).unwrap();
        assert_eq!(back, event());
    }

    #[test]
    fn rfc3164_is_one_line_with_a_bsd_timestamp() {
        let mut e = event();
        e.at = "2026-03-05T07:08:09Z".parse().unwrap();
        e.data = serde_json::json!({"text": "two\nlines"});
        let line = rfc3164(&e, 4, "host");
        assert!(
            line.starts_with("<35>Mar  5 07:08:09 host cordon: {"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
