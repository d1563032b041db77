//! The official MCP conformance suite (npm `@modelcontextprotocol/conformance`) against catena's server and
//! client, through `scripts/mcp-conformance.sh` (about 10 s once the peers are installed; the script installs them
//! with `.ci/setup-mcp.sh` when missing, which needs the npm registry).

use std::process::Command;

#[test]
fn official_conformance_suite_passes_every_in_scope_scenario() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new("bash")
        .arg(root.join("scripts/mcp-conformance.sh"))
        .env("CATENA_MCP_CONFORMANCE_BIN", env!("CARGO_BIN_EXE_catena-mcp-conformance"))
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "scripts/mcp-conformance.sh failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("in-scope scenarios passed: 12 of 12"), "{stdout}");
}
