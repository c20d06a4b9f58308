//! The rig's ground clients: one MCP-over-MQTT session per principal, on the product's own
//! MQTT connection (`mcp::mqtt`, mTLS), speaking raw JSON-RPC as the ground bridge does.
//!
//! A session survives what the rig does to the daemon and the broker: it re-subscribes after
//! a reconnect and replays `initialize` whenever the drone's presence comes back, as the
//! ground bridge does, and fails the calls in flight when the drone or the broker goes away
//! (their answers can no longer come) instead of letting them hang.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Filter;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::MqttConfig;
use crate::mcp::mqtt::{self, ConnectionSpec, MqttEvent};
use crate::mcp::transport::ComponentType;

/// Where the drone is on the broker.
#[derive(Debug, Clone)]
pub struct DroneAddress {
    pub server_topic_root: String,
    pub rpc_topic_root: String,
    pub panic_topic_root: String,
    pub server_id: String,
    pub server_name: String,
}

impl DroneAddress {
    fn presence_topic(&self) -> String {
        format!(
            "{}/presence/{}/{}",
            self.server_topic_root, self.server_id, self.server_name
        )
    }

    fn control_topic(&self) -> String {
        format!(
            "{}/{}/{}",
            self.server_topic_root, self.server_id, self.server_name
        )
    }

    fn rpc_topic(&self, client_id: &str) -> String {
        format!(
            "{}/{client_id}/{}/{}",
            self.rpc_topic_root, self.server_id, self.server_name
        )
    }

    /// The panic topic `publisher` (its own certificate identity) may publish to.
    pub fn panic_topic(&self, publisher: &str) -> String {
        crate::estop::panic_topic(&self.panic_topic_root, &self.server_id, publisher)
    }
}

/// What a tool call answered.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutcome {
    /// False for a tool error (`isError`), a JSON-RPC error or a lost answer.
    pub ok: bool,
    /// The tool's text, the error's message, or why there is no answer.
    pub text: String,
}

enum Ask {
    Call {
        tool: String,
        args: Value,
        reply: oneshot::Sender<CallOutcome>,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        done: oneshot::Sender<anyhow::Result<()>>,
    },
}

/// One MCP session on its own MQTT connection. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    asks: mpsc::Sender<Ask>,
    pub principal: String,
    /// The client id: the CN of the session's certificate, which the broker uses whatever id
    /// is asked for and binds the topics to.
    pub client_id: String,
}

impl Session {
    /// Connects with `mqtt_config`'s certificate (one per principal: the broker takes its CN
    /// as the client id) and starts initializing; calls made before the drone answers wait.
    pub async fn open(
        mqtt_config: &MqttConfig,
        drone: DroneAddress,
        principal: &str,
        token: String,
        stop: CancellationToken,
    ) -> anyhow::Result<Session> {
        let cert = mqtt_config
            .client_cert_path
            .as_deref()
            .context("no client certificate for the session")?;
        let client_id = crate::cert::common_name(cert)
            .with_context(|| format!("the certificate of {principal}"))?;
        let spec = ConnectionSpec {
            client_id: client_id.clone(),
            component_type: ComponentType::Client,
            meta: json!({"implementation": "flight-companion hil"}),
            will: None,
            packet_bytes_max: 1 << 20,
            request_capacity: 256,
        };
        let (client, eventloop) = mqtt::connect(mqtt_config, &spec)
            .with_context(|| format!("MQTT connection for {principal}"))?;
        let (tx, events) = mpsc::channel(1024);
        mqtt::spawn_driver(eventloop, mqtt_config, tx, stop.clone());
        let (asks, ask_rx) = mpsc::channel(1024);
        let actor = Actor {
            client,
            client_id,
            drone,
            token,
            pending: HashMap::new(),
            waiting: Vec::new(),
            next_id: 1,
            init_id: None,
            initialized: false,
        };
        let session_client_id = actor.client_id.clone();
        tokio::spawn(actor.run(events, ask_rx, stop));
        Ok(Session {
            asks,
            principal: principal.to_owned(),
            client_id: session_client_id,
        })
    }

    /// Calls `tool`; `limit` bounds the wait (a lost answer is a failed call, not a hang).
    pub async fn call(&self, tool: &str, args: Value, limit: Duration) -> CallOutcome {
        let (reply, answer) = oneshot::channel();
        let ask = Ask::Call {
            tool: tool.to_owned(),
            args,
            reply,
        };
        if self.asks.send(ask).await.is_err() {
            return lost("the session has ended");
        }
        match tokio::time::timeout(limit, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => lost("the session has ended"),
            Err(_) => lost(&format!("no answer within {:.1} s", limit.as_secs_f64())),
        }
    }

    /// Publishes raw bytes on `topic` from this session's connection (the panic topic).
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> anyhow::Result<()> {
        let (done, result) = oneshot::channel();
        self.asks
            .send(Ask::Publish {
                topic,
                payload,
                done,
            })
            .await
            .map_err(|_| anyhow::anyhow!("the session has ended"))?;
        result
            .await
            .map_err(|_| anyhow::anyhow!("the session has ended"))?
    }
}

fn lost(why: &str) -> CallOutcome {
    CallOutcome {
        ok: false,
        text: format!("no answer: {why}"),
    }
}

struct Actor {
    client: AsyncClient,
    client_id: String,
    drone: DroneAddress,
    token: String,
    pending: HashMap<u64, oneshot::Sender<CallOutcome>>,
    /// Calls asked before the session was initialized.
    waiting: Vec<(u64, String, Value, oneshot::Sender<CallOutcome>)>,
    next_id: u64,
    init_id: Option<u64>,
    initialized: bool,
}

impl Actor {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<MqttEvent>,
        mut asks: mpsc::Receiver<Ask>,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                event = events.recv() => match event {
                    Some(event) => {
                        if let Err(e) = self.on_event(event).await {
                            tracing::debug!("hil session {}: {e:#}", self.client_id);
                        }
                    }
                    None => return,
                },
                ask = asks.recv() => match ask {
                    Some(ask) => self.on_ask(ask).await,
                    None => return,
                },
            }
        }
    }

    async fn publish(&self, topic: String, payload: Vec<u8>) -> anyhow::Result<()> {
        let properties = mqtt::publish_properties(ComponentType::Client, &self.client_id);
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, properties)
            .await?;
        Ok(())
    }

    async fn on_ask(&mut self, ask: Ask) {
        match ask {
            Ask::Call { tool, args, reply } => {
                let id = self.next_id;
                self.next_id += 1;
                if self.initialized {
                    self.send_call(id, &tool, args, reply).await;
                } else {
                    self.waiting.push((id, tool, args, reply));
                }
            }
            Ask::Publish {
                topic,
                payload,
                done,
            } => {
                let _ = done.send(self.publish(topic, payload).await);
            }
        }
    }

    async fn send_call(
        &mut self,
        id: u64,
        tool: &str,
        args: Value,
        reply: oneshot::Sender<CallOutcome>,
    ) {
        let request = json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
            "params":{"name":tool,"arguments":args}});
        match self
            .publish(
                self.drone.rpc_topic(&self.client_id),
                request.to_string().into_bytes(),
            )
            .await
        {
            Ok(()) => {
                self.pending.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(lost(&format!("cannot publish: {e}")));
            }
        }
    }

    fn fail_pending(&mut self, why: &str) {
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(lost(why));
        }
    }

    async fn on_event(&mut self, event: MqttEvent) -> anyhow::Result<()> {
        match event {
            MqttEvent::Connected(_) => {
                // Clean Start: every subscription is gone; the presence (retained) tells us
                // when to initialize.
                self.initialized = false;
                self.init_id = None;
                let mut rpc = Filter::new(self.drone.rpc_topic(&self.client_id), QoS::AtLeastOnce);
                rpc.nolocal = true;
                let presence = Filter::new(self.drone.presence_topic(), QoS::AtLeastOnce);
                self.client.subscribe_many([rpc, presence]).await?;
            }
            MqttEvent::Disconnected { .. } | MqttEvent::TakenOver { .. } => {
                self.initialized = false;
                self.init_id = None;
                self.fail_pending("the MQTT connection was lost before the answer");
            }
            MqttEvent::Publish(p) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                if topic == self.drone.presence_topic() {
                    if p.payload.is_empty() {
                        self.initialized = false;
                        self.init_id = None;
                        self.fail_pending("the drone went offline before the answer");
                    } else {
                        self.initialize().await?;
                    }
                    return Ok(());
                }
                self.on_answer(&p.payload).await?;
            }
            MqttEvent::SubAck(_) | MqttEvent::SubscribeSent(_) => {}
        }
        Ok(())
    }

    async fn initialize(&mut self) -> anyhow::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        self.init_id = Some(id);
        self.initialized = false;
        let request = json!({"jsonrpc":"2.0","id":id,"method":"initialize","params":{
            "_meta": {crate::auth::TOKEN_META_KEY: self.token},
            "protocolVersion":"2025-11-25","capabilities":{},
            "clientInfo":{"name":"flight-companion-hil","version":crate::VERSION}}});
        self.publish(self.drone.control_topic(), request.to_string().into_bytes())
            .await
    }

    async fn on_answer(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            return Ok(());
        };
        if v.get("method").is_some() {
            // Notifications and server requests: the rig does not act on them.
            return Ok(());
        }
        let Some(id) = v.get("id").and_then(Value::as_u64) else {
            return Ok(());
        };
        if Some(id) == self.init_id {
            if let Some(error) = v.get("error") {
                bail!("initialize refused: {error}");
            }
            self.init_id = None;
            self.initialized = true;
            self.publish(
                self.drone.rpc_topic(&self.client_id),
                json!({"jsonrpc":"2.0","method":"notifications/initialized"})
                    .to_string()
                    .into_bytes(),
            )
            .await?;
            for (id, tool, args, reply) in std::mem::take(&mut self.waiting) {
                self.send_call(id, &tool, args, reply).await;
            }
            return Ok(());
        }
        if let Some(reply) = self.pending.remove(&id) {
            let _ = reply.send(outcome_of(&v));
        }
        Ok(())
    }
}

/// A JSON-RPC response to `tools/call` as an outcome.
fn outcome_of(v: &Value) -> CallOutcome {
    if let Some(error) = v.get("error") {
        return CallOutcome {
            ok: false,
            text: error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned),
        };
    }
    let result = v.get("result").cloned().unwrap_or(Value::Null);
    // Flight tools put their one-sentence answer in `structuredContent.message`; the text
    // content is the whole structure as JSON.
    if let Some(message) = result
        .pointer("/structuredContent/message")
        .and_then(Value::as_str)
    {
        return CallOutcome {
            ok: result.get("isError") != Some(&Value::Bool(true)),
            text: message.to_owned(),
        };
    }
    let text = result
        .get("content")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    CallOutcome {
        ok: result.get("isError") != Some(&Value::Bool(true)),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_outcomes() {
        let ok = outcome_of(&json!({"id":1,"result":{"content":[{"type":"text","text":"done"}]}}));
        assert_eq!(
            ok,
            CallOutcome {
                ok: true,
                text: "done".into()
            }
        );
        let refused = outcome_of(
            &json!({"id":1,"result":{"isError":true,"content":[{"type":"text","text":"refused: outside"}]}}),
        );
        assert!(!refused.ok && refused.text == "refused: outside");
        let error = outcome_of(&json!({"id":1,"error":{"code":-32602,"message":"bad args"}}));
        assert!(!error.ok && error.text == "bad args");
    }
}
