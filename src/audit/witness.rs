//! `flight-companion audit witness`: on the ground, keeps every checkpoint the drones publish.
//!
//! The drone publishes each signed checkpoint, retained, on `flight-companion/audit/{server
//! name}` as a C2SP tlog-witness `add-checkpoint` body (`checkpoint::WitnessMessage`). The
//! witness subscribes to `flight-companion/audit/#`, and for each message ([`Witness`],
//! sans-IO):
//! - checks the signature against the verifier keys it was given (`--key`, kept in
//!   `OUT/keys`): an unknown or forged checkpoint is refused and kept under `rejected/`;
//! - checks that it extends the newest checkpoint it holds for that origin (the RFC 9162
//!   consistency proof in the message, or one it already holds at the proof's old size):
//!   a checkpoint that does not (a drone whose log was rewritten and re-signed) is refused,
//!   kept under `rejected/`, and said loudly; two different roots for one size likewise;
//! - keeps it as `OUT/<origin>/checkpoint-<size>.note`.
//!
//! `flight-companion audit verify DIR --witness OUT` then checks the log against every
//! checkpoint kept. The witness prints one `witness: ...` line per message on stdout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Filter;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{self, WitnessMessage};
use super::merkle::{self, Hash};
use crate::mcp::mqtt::{self, ConnectionSpec, MqttEvent};
use crate::mcp::transport::ComponentType;

pub use flight_companion_core::config::AUDIT_TOPIC_ROOT as TOPIC_ROOT;
/// The file of trusted verifier keys in a witness directory.
pub const KEYS_FILE: &str = "keys";

#[derive(Debug, Clone, clap::Args)]
pub struct WitnessArgs {
    /// The ground's MQTT settings (`ground.toml`: `[mqtt]` with the ground certificate).
    #[arg(long)]
    pub config: PathBuf,
    /// Where checkpoints are kept (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Verifier keys of the drones to witness (files of `name+id+key` lines, as `dev-setup`
    /// writes `keys/audit.vkey`). Kept in `OUT/keys`; later runs may omit it.
    #[arg(long = "key")]
    pub keys: Vec<PathBuf>,
    /// Topic filter. Default `flight-companion/audit/#`.
    #[arg(long)]
    pub topic: Option<String>,
    /// MQTT client id. Default `audit-witness-<pid>`.
    #[arg(long)]
    pub client_id: Option<String>,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Kept: a new checkpoint, with how its consistency was established.
    Kept {
        origin: String,
        size: u64,
        how: String,
    },
    /// Already held (a retained message delivered again).
    Duplicate { origin: String, size: u64 },
    /// Refused and kept as evidence.
    Rejected { reason: String },
}

/// The newest checkpoint held per origin, and every root held by size.
#[derive(Debug, Default)]
pub struct Witness {
    keys: Vec<String>,
    roots: HashMap<String, HashMap<u64, Hash>>,
    newest: HashMap<String, u64>,
}

impl Witness {
    pub fn new(keys: Vec<String>) -> Witness {
        Witness {
            keys,
            ..Witness::default()
        }
    }

    /// A checkpoint already held (from the directory at start).
    pub fn hold(&mut self, cp: &checkpoint::Checkpoint) {
        self.roots
            .entry(cp.origin.clone())
            .or_default()
            .insert(cp.size, cp.root);
        let newest = self.newest.entry(cp.origin.clone()).or_insert(0);
        *newest = (*newest).max(cp.size);
    }

    /// Judges one message; the caller keeps what was kept (and the rejected as evidence).
    pub fn handle(&mut self, payload: &[u8]) -> (Verdict, Option<checkpoint::Checkpoint>) {
        let reject = |reason: String| (Verdict::Rejected { reason }, None);
        let message = match WitnessMessage::decode(payload) {
            Ok(m) => m,
            Err(e) => return reject(format!("not a checkpoint message: {e}")),
        };
        let verified = match checkpoint::open(message.note.as_bytes(), &self.keys) {
            Ok(v) => v,
            Err(e) => return reject(e),
        };
        let cp = verified.checkpoint;
        let origin = cp.origin.clone();
        if message.old_size > cp.size {
            return reject(format!(
                "old size {} is larger than the checkpoint's {}",
                message.old_size, cp.size
            ));
        }
        let held = self.roots.get(&origin);
        if let Some(root) = held.and_then(|r| r.get(&cp.size)) {
            return if *root == cp.root {
                (
                    Verdict::Duplicate {
                        origin,
                        size: cp.size,
                    },
                    None,
                )
            } else {
                reject(format!(
                    "CONFLICT: two different roots signed for {} records of {origin}: the \
                     drone's log was rewritten",
                    cp.size
                ))
            };
        }
        let newest = self.newest.get(&origin).copied().unwrap_or(0);
        let how = if message.old_size == 0 {
            if newest > 0 {
                format!(
                    "no proof from the {newest} records held (the drone lost its last \
                     checkpoint, e.g. after damage): audit verify checks it against the log"
                )
            } else {
                "the first checkpoint of this log".to_string()
            }
        } else {
            match held.and_then(|r| r.get(&message.old_size)) {
                Some(old_root) => match merkle::verify_consistency(
                    message.old_size,
                    cp.size,
                    old_root,
                    &cp.root,
                    &message.proof,
                ) {
                    Ok(()) => format!("consistent with the {} records held", message.old_size),
                    Err(e) => {
                        return reject(format!(
                            "INCONSISTENT: the checkpoint at {} records does not extend the one \
                             held at {} ({e}): the drone's log was rewritten",
                            cp.size, message.old_size
                        ));
                    }
                },
                None => format!(
                    "its proof starts at {} records, which this witness missed; audit verify \
                     checks it against the log",
                    message.old_size
                ),
            }
        };
        self.hold(&cp);
        (
            Verdict::Kept {
                origin,
                size: cp.size,
                how,
            },
            Some(cp),
        )
    }
}

/// A directory name for an origin.
pub fn origin_dir(origin: &str) -> String {
    origin
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What a witness directory holds.
#[derive(Debug, Default)]
pub struct Kept {
    pub keys: Vec<String>,
    /// (note bytes, a name for messages).
    pub checkpoints: Vec<(Vec<u8>, String)>,
}

/// Reads a witness directory: its keys and every checkpoint kept, of every origin.
pub fn read_dir(dir: &Path) -> std::io::Result<Kept> {
    let mut kept = Kept::default();
    if let Ok(text) = std::fs::read_to_string(dir.join(KEYS_FILE)) {
        kept.keys = checkpoint::parse_verifier_keys(&text).unwrap_or_default();
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(entry.path())? {
            let file = file?;
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with("checkpoint-") && name.ends_with(".note") {
                kept.checkpoints.push((
                    std::fs::read(file.path())?,
                    format!("{}/{name}", entry.file_name().to_string_lossy()),
                ));
            }
        }
    }
    Ok(kept)
}

fn keep(out: &Path, verdict: &Verdict, note: &str, payload: &[u8]) -> std::io::Result<()> {
    match verdict {
        Verdict::Kept { origin, size, .. } => {
            let dir = out.join(origin_dir(origin));
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(format!("checkpoint-{size:020}.note"));
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, note)?;
            std::fs::rename(&tmp, &path)
        }
        Verdict::Duplicate { .. } => Ok(()),
        Verdict::Rejected { .. } => {
            let dir = out.join("rejected");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(
                dir.join(format!(
                    "{}-{}.msg",
                    super::unix_ms_now(),
                    fastrand::u32(..)
                )),
                payload,
            )
        }
    }
}

/// Runs the witness until `shutdown`.
pub async fn run(
    args: WitnessArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<std::process::ExitCode> {
    let config = crate::ground::config::GroundConfig::load(&args.config)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(&args.out)?;
    let keys_path = args.out.join(KEYS_FILE);
    let mut keys = Vec::new();
    for path in &args.keys {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        keys.extend(
            checkpoint::parse_verifier_keys(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        );
    }
    let mut known = std::fs::read_to_string(&keys_path)
        .ok()
        .and_then(|t| checkpoint::parse_verifier_keys(&t).ok())
        .unwrap_or_default();
    for k in keys {
        if !known.contains(&k) {
            known.push(k);
        }
    }
    if known.is_empty() {
        anyhow::bail!(
            "no verifier key: pass --key FILE (the drone's `flight-companion audit vkey`, or \
             dev-setup's keys/audit.vkey)"
        );
    }
    std::fs::write(&keys_path, known.join("\n") + "\n")?;
    let mut witness = Witness::new(known.clone());
    for (bytes, _) in read_dir(&args.out)?.checkpoints {
        if let Ok(v) = checkpoint::open(&bytes, &known) {
            witness.hold(&v.checkpoint);
        }
    }
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("audit-witness-{}", std::process::id()));
    let spec = ConnectionSpec {
        client_id: client_id.clone(),
        component_type: ComponentType::Client,
        meta: serde_json::json!({"implementation": "flight-companion audit witness"}),
        will: None,
        packet_bytes_max: 64 * 1024,
        request_capacity: 16,
    };
    let (client, eventloop) = mqtt::connect(&config.mqtt, &spec)?;
    let (events_tx, mut events) = tokio::sync::mpsc::channel(64);
    let stop = shutdown.child_token();
    let driver = mqtt::spawn_driver(eventloop, &config.mqtt, events_tx, stop.clone());
    let filter = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("{TOPIC_ROOT}/#"));
    println!(
        "witness: keeping checkpoints of {} key(s) in {}",
        known.len(),
        args.out.display()
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            event = events.recv() => match event {
                Some(MqttEvent::Connected(_)) => {
                    if let Err(e) = client.try_subscribe_many([Filter::new(filter.clone(), QoS::AtLeastOnce)]) {
                        tracing::error!("subscribe {filter}: {e}");
                    }
                    println!("witness: connected, subscribed to {filter}");
                }
                Some(MqttEvent::SubAck(ack)) => {
                    if ack.return_codes.iter().any(|c| !matches!(c, rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_))) {
                        println!("witness: the broker refused the subscription to {filter} ({:?}): check its ACL", ack.return_codes);
                    }
                }
                Some(MqttEvent::Publish(publish)) => {
                    if publish.payload.is_empty() {
                        continue;
                    }
                    let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                    let (verdict, _) = witness.handle(&publish.payload);
                    let note = WitnessMessage::decode(&publish.payload).map(|m| m.note).unwrap_or_default();
                    if let Err(e) = keep(&args.out, &verdict, &note, &publish.payload) {
                        println!("witness: cannot write to {}: {e}", args.out.display());
                    }
                    let topic = super::escape(&topic);
                    match &verdict {
                        Verdict::Kept { origin, size, how } => println!("witness: kept {} {size} from {topic}: {}", super::escape(origin), super::escape(how)),
                        Verdict::Duplicate { origin, size } => println!("witness: already held {} {size}", super::escape(origin)),
                        Verdict::Rejected { reason } => println!("witness: REJECTED a message on {topic}: {}", super::escape(reason)),
                    }
                }
                Some(MqttEvent::Disconnected { error, retry_in }) => {
                    println!("witness: broker connection lost ({}); retrying in {} ms", super::escape(&error), retry_in.as_millis());
                }
                Some(MqttEvent::TakenOver { retry_in }) => {
                    println!("witness: another connection took this client id over (two witnesses with one id?); retrying in {} ms", retry_in.as_millis());
                }
                Some(MqttEvent::SubscribeSent(_)) => {}
                None => break,
            }
        }
    }
    stop.cancel();
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), driver).await;
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checkpoint::{AuditKey, Checkpoint};
    use crate::audit::merkle::{Frontier, leaf_hash};

    fn key() -> AuditKey {
        AuditKey::new(ed25519_dalek::SigningKey::from_bytes(&[3; 32]), "d/audit").unwrap()
    }

    fn message(old: &Frontier, leaves: &[Hash], key: &AuditKey) -> Vec<u8> {
        let mut new = old.clone();
        for l in leaves {
            new.push(*l);
        }
        let note = key
            .sign(&Checkpoint {
                origin: "d/audit".into(),
                size: new.size(),
                root: new.root(),
            })
            .unwrap();
        WitnessMessage {
            old_size: old.size(),
            proof: merkle::consistency_proof(old, leaves).unwrap(),
            note,
        }
        .encode()
        .into_bytes()
    }

    #[test]
    fn keeps_extensions_and_refuses_forks_forgeries_and_conflicts() {
        let k = key();
        let mut w = Witness::new(vec![k.verifier_key()]);
        let leaves: Vec<Hash> = (0u8..20).map(|i| leaf_hash(&[i])).collect();
        let empty = Frontier::new();
        let (v, _) = w.handle(&message(&empty, &leaves[..5], &k));
        assert!(matches!(v, Verdict::Kept { size: 5, .. }), "{v:?}");
        let mut at5 = Frontier::new();
        for l in &leaves[..5] {
            at5.push(*l);
        }
        let (v, _) = w.handle(&message(&at5, &leaves[5..12], &k));
        assert!(
            matches!(v, Verdict::Kept { size: 12, ref how, .. } if how.contains("consistent")),
            "{v:?}"
        );
        // The same again: a duplicate.
        let (v, _) = w.handle(&message(&at5, &leaves[5..12], &k));
        assert!(matches!(v, Verdict::Duplicate { size: 12, .. }), "{v:?}");
        // A rewritten log re-signed with the drone's own key: the proof from 5 fails.
        let mut forked = leaves.clone();
        forked[2] = leaf_hash(b"edited");
        let mut f5 = Frontier::new();
        for l in &forked[..5] {
            f5.push(*l);
        }
        let mut payload = message(&f5, &forked[5..15], &k);
        // It claims to extend the 5 the witness holds.
        let (v, _) = w.handle(&payload);
        assert!(
            matches!(v, Verdict::Rejected { ref reason } if reason.contains("INCONSISTENT")),
            "{v:?}"
        );
        // A forgery by another key: refused.
        let other =
            AuditKey::new(ed25519_dalek::SigningKey::from_bytes(&[4; 32]), "d/audit").unwrap();
        let (v, _) = w.handle(&message(&at5, &leaves[5..14], &other));
        assert!(matches!(v, Verdict::Rejected { .. }), "{v:?}");
        // Another root for a size already held: a conflict.
        let mut f12 = Frontier::new();
        for l in &forked[..12] {
            f12.push(*l);
        }
        let note = k
            .sign(&Checkpoint {
                origin: "d/audit".into(),
                size: 12,
                root: f12.root(),
            })
            .unwrap();
        payload = WitnessMessage {
            old_size: 0,
            proof: vec![],
            note,
        }
        .encode()
        .into_bytes();
        let (v, _) = w.handle(&payload);
        assert!(
            matches!(v, Verdict::Rejected { ref reason } if reason.contains("CONFLICT")),
            "{v:?}"
        );
        // Garbage.
        let (v, _) = w.handle(b"\xff\xfe");
        assert!(matches!(v, Verdict::Rejected { .. }));
    }
}
