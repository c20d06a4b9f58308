//! JSON Schemas of the tools' arguments and results: standard JSON Schema 2020-12, and small.
//!
//! The schemas come from the same Rust types that are (de)serialised (`schemars`), so a
//! result cannot drift from its schema. schemars writes more than a client needs, though:
//! OpenAPI formats that JSON Schema does not define (`double`, `uint8`, `uint64`, ...: the
//! official TypeScript SDK's validator printed a warning for each, 252 a session), `$schema`,
//! a `title` per Rust type name, and enums as one `oneOf` branch per variant. [`compact`]
//! rewrites a schema into the same constraints with standard keywords only:
//! - formats JSON Schema defines stay; unsigned integer formats become `minimum: 0`; the rest
//!   go (they carried no constraint a standard validator checks);
//! - `$schema` and `title`s go (the dialect is MCP's default, 2020-12; Rust type names tell a
//!   model nothing the descriptions do not);
//! - a `oneOf`/`anyOf` of string constants becomes one `enum`, the variants' descriptions
//!   folded into one description;
//! - in outputs, `default`s go (they describe inputs), so does the root's description (the
//!   tool's description says what it returns), and a `oneOf` of objects tagged by one
//!   constant property (a Rust enum with data, e.g. the e-stop's events) becomes one object
//!   whose tag is an `enum` of the variants and whose properties are the variants' (the
//!   `anyOf` of a property's schemas where the variants disagree): every value still
//!   validates, at a third of the size;
//! - `$defs` nobody refers to any more go;
//! - the root's description goes (the tool's description is what a model reads);
//! - nullable types are spelled portably: `type: ["number", "null"]` is legal but a client
//!   that maps schemas onto a single-`type` dialect (Gemini's function declarations, OpenAPI
//!   3.0) may drop the tool or the constraint (the MCP Inspector's `--strict` portability
//!   check warns about each). An optional argument (`Option<T>`, not required) is simply `T`
//!   (absent means the default); a nullable result field is `anyOf: [T, null]`.
//!
//! Shared types stay shared definitions (`$defs` + `$ref`) inside one schema; across tools a
//! big result is not repeated (see `server::WaitResult`).
//!
//! Pure functions; the tests check every tool's schemas with a JSON Schema validator
//! (`tests/peers/mcp_conformance.py`).

use serde_json::{Map, Value, json};

/// Formats JSON Schema 2020-12 defines (section 7.3 of the validation vocabulary).
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Keywords whose value is one subschema.
const ONE_SCHEMA: &[&str] = &[
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
];
/// Keywords whose value is an array of subschemas.
const SCHEMA_LISTS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const SCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// The compact standard schema of a tool's arguments.
pub fn input<T: schemars::JsonSchema>() -> Value {
    compact(raw::<T>(), false)
}

/// The compact standard schema of a tool's structured result.
pub fn output<T: schemars::JsonSchema>() -> Value {
    compact(raw::<T>(), true)
}

fn raw<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or_else(|_| json!({"type": "object"}))
}

/// Rewrites `schema` with standard keywords only and without what a client does not need
/// (see the module documentation). `output`: the schema describes a result.
pub fn compact(schema: Value, output: bool) -> Value {
    let Value::Object(mut root) = schema else {
        return schema;
    };
    root.remove("$schema");
    root.remove("description");
    let mut root = Value::Object(root);
    walk(&mut root, output);
    drop_unused_defs(&mut root);
    root
}

/// Rewrites one schema object and everything below it.
fn walk(schema: &mut Value, output: bool) {
    let Value::Object(object) = schema else {
        return;
    };
    object.remove("title");
    if output {
        object.remove("default");
    }
    if let Some(format) = object.remove("format") {
        let format = format.as_str().unwrap_or_default();
        if STANDARD_FORMATS.contains(&format) {
            object.insert("format".into(), Value::String(format.into()));
        } else if format.starts_with("uint") && !object.contains_key("minimum") {
            object.insert("minimum".into(), json!(0));
        }
    }
    for key in ONE_SCHEMA {
        if let Some(sub) = object.get_mut(*key) {
            walk(sub, output);
        }
    }
    for key in SCHEMA_LISTS {
        if let Some(Value::Array(list)) = object.get_mut(*key) {
            for sub in list {
                walk(sub, output);
            }
        }
    }
    for key in SCHEMA_MAPS {
        if let Some(Value::Object(map)) = object.get_mut(*key) {
            for sub in map.values_mut() {
                walk(sub, output);
            }
        }
    }
    fold_string_constants(object);
    if output {
        merge_tagged_objects(object);
        split_nullable(object);
    } else {
        optional_without_null(object);
    }
}

/// Removes every `description` of `schema` and of the schemas below it (not a property that
/// happens to be named `description`): for results whose meaning the tool's description and
/// a few chosen words ([`describe`]) carry.
pub fn drop_descriptions(schema: &mut Value) {
    let Value::Object(object) = schema else {
        return;
    };
    object.remove("description");
    for key in ONE_SCHEMA {
        if let Some(sub) = object.get_mut(*key) {
            drop_descriptions(sub);
        }
    }
    for key in SCHEMA_LISTS {
        if let Some(Value::Array(list)) = object.get_mut(*key) {
            list.iter_mut().for_each(drop_descriptions);
        }
    }
    for key in SCHEMA_MAPS {
        if let Some(Value::Object(map)) = object.get_mut(*key) {
            map.values_mut().for_each(drop_descriptions);
        }
    }
}

/// Replaces every `$ref` to `#/$defs/NAME` by the definition itself (its siblings kept), then
/// drops `$defs`: a schema used once per tool reads shorter without the indirection. Left as
/// it is when a definition refers to a definition (possibly itself: a recursive type cannot be
/// inlined).
pub fn inline_definitions(schema: &mut Value) {
    let Some(Value::Object(defs)) = schema.get("$defs").cloned() else {
        return;
    };
    let mut nested = Vec::new();
    for def in defs.values() {
        collect_refs(def, &mut nested);
    }
    if !nested.is_empty() {
        return;
    }
    if let Value::Object(root) = schema {
        root.remove("$defs");
    }
    replace_refs(schema, &defs);
}

fn replace_refs(value: &mut Value, defs: &Map<String, Value>) {
    match value {
        Value::Object(object) => {
            let target = object
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/$defs/"))
                .and_then(|name| defs.get(name));
            if let Some(Value::Object(def)) = target {
                object.remove("$ref");
                for (key, v) in def {
                    object.entry(key.clone()).or_insert_with(|| v.clone());
                }
            }
            object.values_mut().for_each(|v| replace_refs(v, defs));
        }
        Value::Array(list) => list.iter_mut().for_each(|v| replace_refs(v, defs)),
        _ => {}
    }
}

/// Sets the description of the subschema at the JSON pointer `pointer`; false when there is
/// no such subschema.
pub fn describe(schema: &mut Value, pointer: &str, description: &str) -> bool {
    match schema.pointer_mut(pointer) {
        Some(Value::Object(object)) => {
            object.insert("description".into(), Value::String(description.into()));
            true
        }
        _ => false,
    }
}

/// `type: [T, "null"]` → `anyOf: [{type: T, ...constraints}, {type: "null"}]`.
fn split_nullable(object: &mut Map<String, Value>) {
    let Some(Value::Array(types)) = object.get("type") else {
        return;
    };
    let others: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
    if others.len() != 1 || others.len() == types.len() {
        return;
    }
    object.remove("type");
    let mut branch = Map::new();
    branch.insert("type".into(), others[0].clone());
    // The value's constraints belong to the non-null branch; annotations stay outside.
    for key in [
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "enum",
        "items",
        "minItems",
        "maxItems",
        "properties",
        "required",
        "additionalProperties",
    ] {
        if let Some(v) = object.remove(key) {
            branch.insert(key.into(), v);
        }
    }
    object.insert(
        "anyOf".into(),
        json!([Value::Object(branch), {"type": "null"}]),
    );
}

/// In arguments, a property that is not required and may be null is just optional: absent
/// means the default, so `null` (and `default: null`) add nothing but a second type.
fn optional_without_null(object: &mut Map<String, Value>) {
    let required: Vec<String> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let Some(Value::Object(properties)) = object.get_mut("properties") else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        if required.contains(name) {
            continue;
        }
        let Value::Object(p) = property else {
            continue;
        };
        if p.get("default") == Some(&Value::Null) {
            p.remove("default");
        }
        if let Some(Value::Array(types)) = p.get("type") {
            let others: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
            if others.len() == 1 && others.len() < types.len() {
                p.insert("type".into(), others[0].clone());
            }
        }
        // `Option<Enum>`: anyOf [{$ref}, {type: null}] → the $ref's branch alone.
        if let Some(Value::Array(branches)) = p.get("anyOf") {
            let non_null: Vec<Value> = branches
                .iter()
                .filter(|b| b.get("type") != Some(&json!("null")))
                .cloned()
                .collect();
            if non_null.len() == 1 && non_null.len() < branches.len() {
                p.remove("anyOf");
                if let Value::Object(branch) = &non_null[0] {
                    for (k, v) in branch {
                        p.entry(k.clone()).or_insert(v.clone());
                    }
                }
            }
        }
    }
}

/// True when some schema in `schema` has a `type` array (for the tests).
pub fn has_type_arrays(schema: &Value) -> bool {
    match schema {
        Value::Object(o) => {
            matches!(o.get("type"), Some(Value::Array(_))) || o.values().any(has_type_arrays)
        }
        Value::Array(a) => a.iter().any(has_type_arrays),
        _ => false,
    }
}

/// `oneOf` of object branches that share one property holding a string `const` (the tag)
/// → one object: the tag's `enum`, the union of the branches' properties, `required` what
/// every branch requires. A property the branches give different schemas is their `anyOf`.
fn merge_tagged_objects(object: &mut Map<String, Value>) {
    let Some(Value::Array(branches)) = object.get("oneOf") else {
        return;
    };
    let mut tag: Option<String> = None;
    let mut tags = Vec::new();
    // Per property, the distinct schemas the variants give it (descriptions aside).
    let mut variants: Vec<(String, Vec<Value>)> = Vec::new();
    let mut required: Option<Vec<Value>> = None;
    for branch in branches {
        let Some(props) = branch.get("properties").and_then(Value::as_object) else {
            return;
        };
        if branch.get("type").is_some_and(|t| t != "object")
            || branch.as_object().is_some_and(|b| {
                b.keys().any(|k| {
                    !["type", "properties", "required", "description"].contains(&k.as_str())
                })
            })
        {
            return;
        }
        let this_tag = props.iter().find_map(|(name, p)| {
            p.get("const")
                .and_then(Value::as_str)
                .map(|c| (name.clone(), c.to_owned()))
        });
        let Some((name, value)) = this_tag else {
            return;
        };
        if tag.get_or_insert_with(|| name.clone()) != &name {
            return;
        }
        tags.push(Value::String(value));
        for (prop, schema) in props {
            if *prop == name {
                continue;
            }
            let index = match variants.iter().position(|(p, _)| p == prop) {
                Some(i) => i,
                None => {
                    variants.push((prop.clone(), Vec::new()));
                    variants.len() - 1
                }
            };
            let seen = &mut variants[index].1;
            if !seen
                .iter()
                .any(|s| without_description(s) == without_description(schema))
            {
                seen.push(schema.clone());
            }
        }
        let this_required: Vec<Value> = branch
            .get("required")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        required = Some(match required {
            None => this_required,
            Some(r) => r
                .into_iter()
                .filter(|x| this_required.contains(x))
                .collect(),
        });
    }
    let mut properties = Map::new();
    for (prop, mut schemas) in variants {
        let merged = if schemas.len() == 1 {
            schemas.remove(0)
        } else {
            json!({"anyOf": schemas})
        };
        properties.insert(prop, merged);
    }
    let Some(tag) = tag else {
        return;
    };
    properties.insert(tag.clone(), json!({"type": "string", "enum": tags}));
    object.remove("oneOf");
    object.insert("type".into(), json!("object"));
    object.insert("properties".into(), Value::Object(properties));
    let mut required = required.unwrap_or_default();
    if !required.contains(&Value::String(tag.clone())) {
        required.insert(0, Value::String(tag));
    }
    object.insert("required".into(), Value::Array(required));
}

/// `oneOf`/`anyOf` of `{const: "x", description?}` string branches → `enum`.
fn fold_string_constants(object: &mut Map<String, Value>) {
    for key in ["oneOf", "anyOf"] {
        let Some(Value::Array(branches)) = object.get(key) else {
            continue;
        };
        let mut values = Vec::new();
        let mut described = Vec::new();
        for branch in branches {
            let Value::Object(b) = branch else {
                return;
            };
            let constant = match (b.get("const"), b.get("enum")) {
                (Some(Value::String(c)), None) => vec![c.clone()],
                (None, Some(Value::Array(e))) if e.iter().all(Value::is_string) => e
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => return,
            };
            let extra = b
                .keys()
                .any(|k| !["const", "enum", "type", "description"].contains(&k.as_str()));
            if extra || b.get("type").is_some_and(|t| t != "string") {
                return;
            }
            if let Some(Value::String(d)) = b.get("description") {
                described.push(format!(
                    "`{}`: {}",
                    constant.join("`, `"),
                    d.trim_end_matches('.')
                ));
            }
            values.extend(constant);
        }
        object.remove(key);
        object.insert("type".into(), json!("string"));
        object.insert("enum".into(), json!(values));
        if !described.is_empty() {
            let mut text = object
                .get("description")
                .and_then(Value::as_str)
                .map(|d| format!("{} ", d.trim_end()))
                .unwrap_or_default();
            text.push_str(&described.join("; "));
            text.push('.');
            object.insert("description".into(), Value::String(text));
        }
        return;
    }
}

/// Removes `$defs` entries no `$ref` reaches any more (repeated until none is left over).
fn without_description(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Value::Object(o) = &mut s {
        o.remove("description");
    }
    s
}

fn drop_unused_defs(root: &mut Value) {
    loop {
        let Some(Value::Object(defs)) = root.get("$defs") else {
            return;
        };
        let mut refs = Vec::new();
        collect_refs(root, &mut refs);
        let unused: Vec<String> = defs
            .keys()
            .filter(|name| !refs.iter().any(|r| r == &format!("#/$defs/{name}")))
            .cloned()
            .collect();
        if unused.is_empty() {
            return;
        }
        if let Some(Value::Object(defs)) = root.get_mut("$defs") {
            for name in unused {
                defs.remove(&name);
            }
            if defs.is_empty() {
                if let Value::Object(r) = root {
                    r.remove("$defs");
                }
                return;
            }
        }
    }
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(o) => {
            for (k, v) in o {
                if k == "$ref"
                    && let Value::String(r) = v
                {
                    refs.push(r.clone());
                } else {
                    collect_refs(v, refs);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

/// Every `format` value used anywhere in `schema` (for the tests).
pub fn formats(schema: &Value) -> Vec<String> {
    let mut found = Vec::new();
    fn visit(v: &Value, found: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(f)) = o.get("format") {
                    found.push(f.clone());
                }
                o.values().for_each(|x| visit(x, found));
            }
            Value::Array(a) => a.iter().for_each(|x| visit(x, found)),
            _ => {}
        }
    }
    visit(schema, &mut found);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    enum Colour {
        /// Like grass.
        Green,
        /// Like the sky.
        Blue,
    }

    #[derive(serde::Serialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Sample {
        /// Metres.
        altitude_m: f64,
        count: u64,
        small: u8,
        signed: i32,
        colour: Colour,
        other: Option<Colour>,
        #[serde(default)]
        maybe: Option<String>,
    }

    #[test]
    fn non_standard_formats_titles_and_schema_go_unsigned_stays_unsigned() {
        let before = raw::<Sample>();
        assert!(
            !formats(&before).is_empty(),
            "schemars writes formats: {before}"
        );
        let after = output::<Sample>();
        assert!(formats(&after).is_empty(), "{after}");
        assert!(after.get("$schema").is_none() && after.get("title").is_none());
        let p = &after["properties"];
        assert_eq!(p["count"], json!({"type": "integer", "minimum": 0}));
        assert_eq!(
            p["maybe"],
            json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
            "a nullable result is spelled portably"
        );
        assert!(!has_type_arrays(&after), "{after}");
        let input = input::<Sample>();
        assert_eq!(
            input["properties"]["maybe"],
            json!({"type": "string"}),
            "{input}"
        );
        assert!(!has_type_arrays(&input), "{input}");
        assert!(input.get("description").is_none() && after.get("description").is_none());
        assert_eq!(p["small"]["minimum"], 0, "{after}");
        assert_eq!(p["signed"], json!({"type": "integer"}));
        assert_eq!(p["altitude_m"]["description"], "Metres.");
        assert!(!after.to_string().contains("\"title\""), "{after}");
    }

    #[test]
    fn string_constants_become_one_enum_with_the_descriptions_folded() {
        let after = output::<Sample>();
        let colour = &after["$defs"]["Colour"];
        assert_eq!(colour["enum"], json!(["Green", "Blue"]), "{after}");
        assert_eq!(colour["type"], "string");
        assert!(colour.get("oneOf").is_none());
        let d = colour["description"].as_str().unwrap();
        assert!(
            d.contains("`Green`: Like grass") && d.contains("`Blue`: Like the sky"),
            "{d}"
        );
    }

    #[derive(serde::Serialize, schemars::JsonSchema)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Event {
        Started { by: String, first: bool },
        Stopped { by: String, why: String },
        Moved { first: u8 },
    }

    #[test]
    fn tagged_variants_become_one_object_in_outputs_only() {
        let out = output::<Event>();
        assert!(out.get("oneOf").is_none(), "{out}");
        assert_eq!(out["type"], "object");
        assert_eq!(
            out["properties"]["kind"],
            json!({"type": "string", "enum": ["started", "stopped", "moved"]})
        );
        assert_eq!(out["properties"]["by"], json!({"type": "string"}));
        assert_eq!(
            out["properties"]["first"],
            json!({"anyOf": [{"type": "boolean"}, {"type": "integer", "minimum": 0, "maximum": 255}]}),
            "the variants disagree: either"
        );
        assert_eq!(out["required"], json!(["kind"]), "{out}");
        let input = input::<Event>();
        assert!(
            input["oneOf"].is_array(),
            "inputs keep every variant: {input}"
        );
    }

    #[test]
    fn standard_formats_stay_and_unused_definitions_go() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"at": {"type": "string", "format": "date-time"},
                           "n": {"type": "number", "format": "double", "default": 1}},
            "$defs": {"Unused": {"type": "string"}, "Used": {"type": "string"}},
            "items": {"$ref": "#/$defs/Used"},
        });
        let input = compact(schema.clone(), false);
        assert_eq!(formats(&input), vec!["date-time".to_string()]);
        assert_eq!(
            input["properties"]["n"]["default"], 1,
            "inputs keep defaults"
        );
        assert!(input["$defs"].get("Unused").is_none() && input["$defs"]["Used"].is_object());
        let output = compact(schema, true);
        assert!(output["properties"]["n"].get("default").is_none());
    }

    #[test]
    fn descriptions_go_but_not_a_property_named_description_and_definitions_inline() {
        let mut schema = json!({
            "description": "root",
            "type": "object",
            "properties": {
                "description": {"type": "string", "description": "a field named description"},
                "kind": {"$ref": "#/$defs/Kind", "description": "which"},
            },
            "$defs": {"Kind": {"description": "k", "enum": ["a", "b"], "type": "string"}},
        });
        drop_descriptions(&mut schema);
        assert_eq!(
            schema,
            json!({
                "type": "object",
                "properties": {
                    "description": {"type": "string"},
                    "kind": {"$ref": "#/$defs/Kind"},
                },
                "$defs": {"Kind": {"enum": ["a", "b"], "type": "string"}},
            })
        );
        inline_definitions(&mut schema);
        assert!(describe(&mut schema, "/properties/kind", "which one"));
        assert!(!describe(&mut schema, "/properties/nowhere", "x"));
        assert_eq!(
            schema,
            json!({
                "type": "object",
                "properties": {
                    "description": {"type": "string"},
                    "kind": {"enum": ["a", "b"], "type": "string", "description": "which one"},
                },
            })
        );
        // A definition that refers to a definition (a recursive type) stays as it is.
        let recursive = json!({
            "$ref": "#/$defs/Node",
            "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        });
        let mut kept = recursive.clone();
        inline_definitions(&mut kept);
        assert_eq!(kept, recursive);
    }
}
