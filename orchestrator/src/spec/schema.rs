//! The JSON Schema of cluster specs, for editors and other tools (TOML maps onto JSON).
//! `orchestrator/spec-schema.json` is this schema; a test keeps the file in sync.

use super::ClusterSpec;

/// The JSON Schema of [`ClusterSpec`], pretty-printed with a trailing newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(ClusterSpec);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set to rewrite `spec-schema.json` instead of comparing it.
    const UPDATE: &str = "KILN_UPDATE_SCHEMA";

    #[test]
    fn schema_file_is_in_sync() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/spec-schema.json");
        let fresh = json_schema();
        if std::env::var_os(UPDATE).is_some() {
            std::fs::write(path, &fresh).unwrap();
        }
        let stored = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            stored == fresh,
            "{path} is out of date; run `{UPDATE}=1 cargo test -p orchestrator schema` and commit it"
        );
    }

    #[test]
    fn schema_names_every_step_action() {
        let schema = json_schema();
        for action in [
            "boot",
            "exec",
            "succeed",
            "fail",
            "wait_for_unit",
            "wait_for_port",
            "partition",
            "heal",
            "crash",
            "start",
            "copy_to",
            "copy_from",
            "sleep",
        ] {
            assert!(
                schema.contains(&format!("\"{action}\"")),
                "{action} missing"
            );
        }
    }
}
