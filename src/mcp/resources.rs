//! The resource registry: every resource the drone serves is one [`ResourceEntry`] carrying
//! its URI, name, title, description, MIME type, least role, whether it needs the camera,
//! which session flag a subscription sets, and how it is read. `resources/list`,
//! `resources/read`, `resources/(un)subscribe`, authorization (the gate is handed the entry's
//! role) and the presence's RBAC read this one table, as the tools read `mcp::tools`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use base64::Engine as _;
use rmcp::ErrorData;
use rmcp::model::{Resource, ResourceContents};
use serde_json::Value;
use tokio::sync::watch;

use crate::camera::CameraHandle;
use crate::mcp::errors;
use crate::mcp::guard::Guard;
use crate::role::Role;
use crate::status::StatusReport;

// The URIs are the core's, which the ground bridge's console shares.
pub use flight_companion_core::mcp::uri::{
    AUDIT_RECENT_URI, CAMERA_URI, HEALTH_URI, SECURITY_URI, STATUS_URI,
};

/// What a read may use.
pub struct ResourceRead {
    pub status: watch::Receiver<StatusReport>,
    pub guard: Arc<Guard>,
    pub camera: Option<CameraHandle>,
}

/// A read's contents, or a JSON-RPC error.
pub type ReadFuture = Pin<Box<dyn Future<Output = Result<ResourceContents, ErrorData>> + Send>>;

/// Which updates a subscription asks for (each session keeps one flag per kind, which the
/// shell reads to send `notifications/resources/updated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscription {
    /// On every status publication (`mcp.status_update_rate_hz`).
    Status,
    /// When a newer camera frame exists (`camera.resource_update_rate_hz`).
    Camera,
}

/// One resource.
pub struct ResourceEntry {
    pub uri: &'static str,
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub mime_type: &'static str,
    /// The least role that may list, read and subscribe to it.
    pub role: Role,
    /// Served only when a camera is configured.
    pub needs_camera: bool,
    /// The updates a `resources/subscribe` asks for; `None`: it sends no updates, read it
    /// instead.
    pub subscription: Option<Subscription>,
    pub read: fn(ResourceRead) -> ReadFuture,
}

impl ResourceEntry {
    /// The resource as `resources/list` lists it (the newest version's fields).
    pub fn to_resource(&self) -> Resource {
        let mut resource = Resource::new(self.uri, self.name)
            .with_title(self.title)
            .with_description(self.description);
        resource.mime_type = Some(self.mime_type.into());
        resource
    }
}

pub const RESOURCES: &[ResourceEntry] = &[
    ResourceEntry {
        uri: STATUS_URI,
        name: "vehicle-status",
        title: "Vehicle status",
        description: "The same JSON as the get_status tool. Subscribe to receive \
            notifications/resources/updated when it changes.",
        mime_type: "application/json",
        role: Role::ReadOnly,
        needs_camera: false,
        subscription: Some(Subscription::Status),
        read: read_status,
    },
    ResourceEntry {
        uri: CAMERA_URI,
        name: "camera-latest",
        title: "Latest camera image",
        description: "The newest fresh camera frame as a downscaled JPEG (base64 blob). \
            Subscribe to be told, at a low configured rate, when a newer one exists.",
        mime_type: "image/jpeg",
        role: Role::ReadOnly,
        needs_camera: true,
        subscription: Some(Subscription::Camera),
        read: read_camera,
    },
    ResourceEntry {
        uri: HEALTH_URI,
        name: "health-summary",
        title: "Health summary",
        description: "healthy, degraded or failed, with the reasons, the alerts active now \
            (battery_low, link_degraded, gps_lost, cpu_hot, audit_damaged, local_estop_unavailable, link_untrusted, audit_unwritable) and the last ones raised. \
            Raised alerts are also sent as notifications/message (level warning).",
        mime_type: "application/json",
        role: Role::ReadOnly,
        needs_camera: false,
        subscription: None,
        read: read_health,
    },
    ResourceEntry {
        uri: SECURITY_URI,
        name: "security-summary",
        title: "Security summary",
        description: "Security events (bad or expired tokens, denied roles, rate limits, takeovers) \
            counted by kind over the last hour and since start, the control lease, and \
            the audit log's health.",
        mime_type: "application/json",
        role: Role::ReadOnly,
        needs_camera: false,
        subscription: None,
        read: read_security,
    },
    ResourceEntry {
        uri: AUDIT_RECENT_URI,
        name: "audit-recent",
        title: "Recent audit records",
        description: "The last 100 audit records, oldest first. ADMIN only.",
        mime_type: "application/json",
        role: Role::Admin,
        needs_camera: false,
        subscription: None,
        read: read_audit_recent,
    },
];

/// The resources of this drone (the camera's only with a camera).
pub fn on_this_drone(camera: bool) -> impl Iterator<Item = &'static ResourceEntry> {
    RESOURCES.iter().filter(move |r| camera || !r.needs_camera)
}

/// The resource of this drone at `uri`.
pub fn find(uri: &str, camera: bool) -> Option<&'static ResourceEntry> {
    on_this_drone(camera).find(|r| r.uri == uri)
}

/// The resources a caller of `role` may list and read.
pub fn served(role: Role, camera: bool) -> impl Iterator<Item = &'static ResourceEntry> {
    on_this_drone(camera).filter(move |r| r.role <= role)
}

fn json_text(uri: &str, text: String) -> ResourceContents {
    ResourceContents::text(text, uri).with_mime_type("application/json")
}

fn read_status(read: ResourceRead) -> ReadFuture {
    Box::pin(async move {
        // Serialised once per published report, shared with get_status.
        let text = read.status.borrow().serialized().text.to_string();
        Ok(json_text(STATUS_URI, text))
    })
}

fn read_camera(read: ResourceRead) -> ReadFuture {
    Box::pin(async move {
        let Some(camera) = &read.camera else {
            return Err(errors::internal("no camera is configured"));
        };
        let captured = camera
            .capture(crate::camera::CaptureRequest::default())
            .await
            .map_err(|e| errors::internal(e.to_string()))?;
        let blob = base64::engine::general_purpose::STANDARD.encode(&captured.jpeg);
        Ok(ResourceContents::blob(blob, CAMERA_URI).with_mime_type("image/jpeg"))
    })
}

fn read_health(read: ResourceRead) -> ReadFuture {
    Box::pin(async move {
        let text = serde_json::to_string(&read.status.borrow().health)
            .map_err(|e| errors::internal(format!("health serialisation: {e}")))?;
        Ok(json_text(HEALTH_URI, text))
    })
}

fn read_security(read: ResourceRead) -> ReadFuture {
    Box::pin(async move {
        Ok(json_text(
            SECURITY_URI,
            read.guard.security_json().to_string(),
        ))
    })
}

fn read_audit_recent(read: ResourceRead) -> ReadFuture {
    Box::pin(async move {
        let recent = Value::Array(read.guard.audit.recent(100)).to_string();
        Ok(json_text(AUDIT_RECENT_URI, recent))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_rules() {
        let role = |uri: &str| find(uri, true).unwrap().role;
        assert_eq!(role(AUDIT_RECENT_URI), Role::Admin);
        assert_eq!(role(STATUS_URI), Role::ReadOnly);
        assert!(find("file:///etc/passwd", true).is_none());
        assert!(
            find(CAMERA_URI, false).is_none(),
            "no camera, no camera://latest"
        );
        let subscribable: Vec<&str> = RESOURCES
            .iter()
            .filter(|r| r.subscription.is_some())
            .map(|r| r.uri)
            .collect();
        assert_eq!(subscribable, [STATUS_URI, CAMERA_URI]);
        let read_only: Vec<&str> = served(Role::ReadOnly, false).map(|r| r.uri).collect();
        assert_eq!(read_only, [STATUS_URI, HEALTH_URI, SECURITY_URI]);
        assert!(served(Role::Public, true).next().is_none());
        assert!(RESOURCES.iter().all(|r| r.role < Role::System));
    }
}
