//! What each negotiated MCP version may carry (pure).
//!
//! The server serves 2024-11-05 to 2025-11-25 and answers each session in the version it
//! negotiated: a field a version does not define is not sent to a client of that version
//! (rmcp builds its types for the newest version and leaves this to the server). The table
//! follows the schemas of the specification (`schema/<version>/schema.ts`):
//! - 2025-03-26 added tool `annotations`, progress `message`, audio content and the
//!   `completions` capability;
//! - 2025-06-18 added `outputSchema` and `structuredContent`, `title` (tools, resources,
//!   implementations, tool annotations had theirs since 2025-03-26), resource links in tool
//!   results, `_meta` on tools, resources and content, and `lastModified` in annotations;
//! - 2025-11-25 added `icons`, the implementation's `description` and `websiteUrl`, and
//!   tasks.
//!
//! `tests/peers/mcp_spec_client.py` checks the answers of each version against the same table,
//! written from the specification independently.

use rmcp::model::{
    Annotations, CallToolResult, ContentBlock, InitializeResult, ProtocolVersion, Resource, Tool,
};

/// The features of one negotiated version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Tool `annotations`, progress `message`, audio content, `completions` (2025-03-26).
    pub since_2025_03_26: bool,
    /// `outputSchema`/`structuredContent`, `title`s, resource links, `_meta` on tools,
    /// resources and content, `lastModified` (2025-06-18).
    pub since_2025_06_18: bool,
    /// `icons`, implementation `description`/`websiteUrl`, tasks (2025-11-25).
    pub since_2025_11_25: bool,
}

impl Features {
    /// The newest version served (what a session has before `initialize` completes).
    pub const LATEST: Features = Features {
        since_2025_03_26: true,
        since_2025_06_18: true,
        since_2025_11_25: true,
    };

    /// The features of `version` (dates compare as strings; an unknown older version gets
    /// the 2024-11-05 set, a newer one the newest).
    pub fn of(version: &ProtocolVersion) -> Features {
        Features::of_str(version.as_str())
    }

    pub fn of_str(version: &str) -> Features {
        Features {
            since_2025_03_26: version >= "2025-03-26",
            since_2025_06_18: version >= "2025-06-18",
            since_2025_11_25: version >= "2025-11-25",
        }
    }

    /// Progress notifications may carry `message`.
    pub fn progress_message(self) -> bool {
        self.since_2025_03_26
    }

    /// Tools may declare `outputSchema` and results carry `structuredContent`.
    pub fn structured_output(self) -> bool {
        self.since_2025_06_18
    }

    /// One tool of `tools/list` as this version defines it.
    pub fn tool(self, tool: &mut Tool) {
        if !self.since_2025_11_25 {
            tool.icons = None;
        }
        if !self.since_2025_06_18 {
            tool.title = None;
            tool.output_schema = None;
            tool.meta = None;
        }
        if !self.since_2025_03_26 {
            tool.annotations = None;
        }
    }

    /// One resource of `resources/list` as this version defines it.
    pub fn resource(self, resource: &mut Resource) {
        if !self.since_2025_11_25 {
            resource.icons = None;
        }
        if !self.since_2025_06_18 {
            resource.title = None;
            resource.meta = None;
        }
        self.annotations(&mut resource.annotations);
    }

    fn annotations(self, annotations: &mut Option<Annotations>) {
        if !self.since_2025_06_18
            && let Some(a) = annotations
        {
            a.last_modified = None;
        }
    }

    /// A `tools/call` result as this version defines it. Before 2025-06-18 the structured
    /// result goes (its JSON is also the text block, see `server::structured`); a resource
    /// link becomes a text block naming the URI; audio before 2025-03-26 becomes a text block
    /// saying what was left out.
    pub fn call_result(self, result: &mut CallToolResult) {
        if !self.structured_output() {
            result.structured_content = None;
        }
        for block in result.content.iter_mut() {
            let replacement = match block {
                ContentBlock::ResourceLink(link) if !self.since_2025_06_18 => Some(format!(
                    "resource {} ({})",
                    link.uri,
                    link.description.as_deref().unwrap_or(&link.name)
                )),
                ContentBlock::Audio(audio) if !self.since_2025_03_26 => Some(format!(
                    "({} audio left out: MCP 2024-11-05 has no audio content)",
                    audio.mime_type
                )),
                _ => None,
            };
            if let Some(text) = replacement {
                *block = ContentBlock::text(text);
            }
            if !self.since_2025_06_18 {
                match block {
                    ContentBlock::Text(t) => {
                        t.meta = None;
                        self.annotations(&mut t.annotations);
                    }
                    ContentBlock::Image(i) => {
                        i.meta = None;
                        self.annotations(&mut i.annotations);
                    }
                    ContentBlock::Audio(a) => {
                        a.meta = None;
                        self.annotations(&mut a.annotations);
                    }
                    ContentBlock::Resource(r) => {
                        r.meta = None;
                        self.annotations(&mut r.annotations);
                    }
                    _ => {}
                }
            }
        }
    }

    /// The `initialize` result as this version defines it.
    pub fn initialize(self, result: &mut InitializeResult) {
        let info = &mut result.server_info;
        if !self.since_2025_11_25 {
            info.description = None;
            info.icons = None;
            info.website_url = None;
        }
        if !self.since_2025_06_18 {
            info.title = None;
        }
        if !self.since_2025_03_26 {
            result.capabilities.completions = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{Implementation, ServerCapabilities, ToolAnnotations};
    use serde_json::{Value, json};
    use std::sync::Arc;

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    fn full_tool() -> Tool {
        let mut tool = Tool::new("goto", "d", Arc::new(serde_json::Map::new()))
            .with_title("Fly")
            .with_raw_output_schema(Arc::new(serde_json::Map::new()))
            .with_annotations(ToolAnnotations::new().destructive(true));
        tool.icons = Some(Vec::new());
        tool
    }

    #[test]
    fn each_version_gets_only_the_tool_fields_it_defines() {
        let cases = [
            ("2024-11-05", vec!["description", "inputSchema", "name"]),
            (
                "2025-03-26",
                vec!["annotations", "description", "inputSchema", "name"],
            ),
            (
                "2025-06-18",
                vec![
                    "annotations",
                    "description",
                    "inputSchema",
                    "name",
                    "outputSchema",
                    "title",
                ],
            ),
            (
                "2025-11-25",
                vec![
                    "annotations",
                    "description",
                    "icons",
                    "inputSchema",
                    "name",
                    "outputSchema",
                    "title",
                ],
            ),
        ];
        for (version, want) in cases {
            let mut tool = full_tool();
            Features::of_str(version).tool(&mut tool);
            assert_eq!(
                keys(&serde_json::to_value(&tool).unwrap()),
                want,
                "{version}"
            );
        }
    }

    #[test]
    fn structured_content_and_resource_links_wait_for_2025_06_18() {
        let make = || {
            let mut r = CallToolResult::structured(json!({"a": 1}));
            r.content.push(ContentBlock::ResourceLink(Resource::new(
                "camera://latest",
                "camera",
            )));
            r
        };
        let mut old = make();
        Features::of_str("2025-03-26").call_result(&mut old);
        let v = serde_json::to_value(&old).unwrap();
        assert!(v.get("structuredContent").is_none(), "{v}");
        assert_eq!(
            v["content"][0]["text"], "{\"a\":1}",
            "the JSON stays as text"
        );
        assert_eq!(v["content"][1]["type"], "text", "{v}");
        assert!(
            v["content"][1]["text"]
                .as_str()
                .unwrap()
                .contains("camera://latest")
        );
        let mut new = make();
        Features::of_str("2025-06-18").call_result(&mut new);
        let v = serde_json::to_value(&new).unwrap();
        assert_eq!(v["structuredContent"], json!({"a": 1}));
        assert_eq!(v["content"][1]["type"], "resource_link");
    }

    #[test]
    fn initialize_and_resources_lose_newer_fields() {
        let mut info = Implementation::new("fc", "1");
        info.title = Some("t".into());
        info.website_url = Some("https://example.invalid".into());
        let mut caps = ServerCapabilities::default();
        caps.completions = Some(Default::default());
        let mut result = InitializeResult::new(caps);
        result.server_info = info;
        Features::of_str("2024-11-05").initialize(&mut result);
        let v = serde_json::to_value(&result).unwrap();
        assert_eq!(keys(&v["serverInfo"]), vec!["name", "version"], "{v}");
        assert!(v["capabilities"].get("completions").is_none(), "{v}");
        let mut resource = Resource::new("vehicle://status", "s").with_title("Status");
        Features::of_str("2025-03-26").resource(&mut resource);
        assert!(
            serde_json::to_value(&resource)
                .unwrap()
                .get("title")
                .is_none()
        );
        let mut resource = Resource::new("vehicle://status", "s").with_title("Status");
        Features::of_str("2025-11-25").resource(&mut resource);
        assert_eq!(serde_json::to_value(&resource).unwrap()["title"], "Status");
    }

    #[test]
    fn versions_compare_by_date() {
        assert_eq!(
            Features::of(&ProtocolVersion::V_2025_11_25),
            Features::LATEST
        );
        assert!(!Features::of_str("2024-11-05").progress_message());
        assert!(Features::of_str("2025-03-26").progress_message());
        assert!(!Features::of_str("2025-03-26").structured_output());
    }
}
