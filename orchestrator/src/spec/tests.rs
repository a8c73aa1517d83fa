//! Parser and validation tests: the reference spec, and one broken spec per error kind, whose
//! message must name the file, the line and the field.

use super::*;

const FILE: &str = "cluster.toml";

/// A small valid spec; tests append or replace text to break it.
const BASE: &str = r#"
[[network]]
name = "net0"
subnet = "10.0.0.0/24"

[[node]]
name = "db"
role = "control-plane"
image = "kiln-etcd"
disks = [{ name = "data", size = "1G" }]
networks = [{ network = "net0", address = "10.0.0.11/24" }]
ready = [{ unit = "etcd" }, { port = 2379 }, { file = "/run/x" }, { command = "true" }]

[[node]]
name = "app"
role = "worker"
image = "kiln-nginx"
networks = [{ network = "net0", address = "10.0.0.12/24" }]
depends_on = ["db"]
"#;

/// 1-based line of the only line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{needle:?} should occur on exactly one line"
    );
    lines[0]
}

/// Parses `text`, expects a validation error, and returns its problems and its message.
fn invalid(text: &str) -> (Vec<Problem>, String) {
    match ClusterSpec::from_str(text, FILE) {
        Err(e @ SpecError::Invalid { .. }) => {
            let msg = e.to_string();
            let SpecError::Invalid { problems, .. } = e else {
                unreachable!()
            };
            (problems, msg)
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// Asserts the one problem of `text` has `kind`, sits on the line containing `marker`, and
/// names `field`; returns its message.
fn one_problem(text: &str, kind: ProblemKind, marker: &str, field: &str) -> String {
    let (problems, msg) = invalid(text);
    assert_eq!(problems.len(), 1, "{msg}");
    let p = &problems[0];
    assert_eq!(p.kind, kind, "{msg}");
    let line = line_of(text, marker);
    assert_eq!((p.line, p.field.as_str()), (line, field), "{msg}");
    assert!(msg.contains(&format!("{FILE}:{line}: {field}: ")), "{msg}");
    msg
}

#[test]
fn base_spec_is_valid() {
    let spec = ClusterSpec::from_str(BASE, FILE).unwrap();
    assert_eq!(spec.nodes.len(), 2);
    let db = spec.node("db").unwrap();
    assert_eq!((db.cpus, db.memory), (1, 512));
    assert_eq!(db.disks[0].size_bytes(), Ok(1 << 30));
    assert_eq!(
        db.ready,
        vec![
            ReadinessCheck::Unit("etcd".into()),
            ReadinessCheck::Port(2379),
            ReadinessCheck::File("/run/x".into()),
            ReadinessCheck::Command("true".into()),
        ]
    );
}

#[test]
fn reference_spec_parses_and_validates() {
    let spec = ClusterSpec::reference();
    let names: Vec<&str> = spec.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["node01", "node02", "node03", "node04", "node05", "node06"]
    );
    let roles: Vec<Role> = spec.nodes.iter().map(|n| n.role).collect();
    use Role::*;
    assert_eq!(
        roles,
        [
            ControlPlane,
            ControlPlane,
            ControlPlane,
            Storage,
            Worker,
            Gateway
        ]
    );
    assert_eq!(
        spec.node("node04").unwrap().disks[0].name.as_deref(),
        Some("data")
    );
    assert_eq!(spec.node("node06").unwrap().depends_on, ["node05"]);
    let smoke = spec.scenario("fresh-smoke").unwrap();
    assert_eq!(smoke.steps.first(), Some(&Step::Boot));
    let actions: Vec<&str> = smoke.steps.iter().map(Step::action).collect();
    for needed in [
        "partition",
        "heal",
        "crash",
        "start",
        "wait_ready",
        "fail",
        "succeed",
    ] {
        assert!(actions.contains(&needed), "fresh-smoke lacks {needed}");
    }
    // The crash comes after the heal, the restart after the crash.
    let pos = |a: &str| actions.iter().position(|x| *x == a).unwrap();
    assert!(
        pos("partition") < pos("heal") && pos("heal") < pos("crash") && pos("crash") < pos("start")
    );
}

#[test]
fn reference_spec_round_trips_through_toml() {
    let spec = ClusterSpec::reference();
    let text = toml::to_string(&spec).unwrap();
    assert_eq!(
        ClusterSpec::from_str(&text, "roundtrip.toml").unwrap(),
        spec
    );
}

#[test]
fn from_file_reads_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("my-cluster.toml");
    std::fs::write(
        &path,
        BASE.replace("depends_on = [\"db\"]", "depends_on = [\"dbx\"]"),
    )
    .unwrap();
    let msg = ClusterSpec::from_file(&path).unwrap_err().to_string();
    let line = line_of(BASE, "depends_on");
    assert!(
        msg.contains(&format!("{}:{line}: node[1].depends_on[0]", path.display())),
        "{msg}"
    );
    let missing = ClusterSpec::from_file(dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(missing, SpecError::Read { .. }));
    assert!(missing.to_string().contains("nope.toml"));
}

#[test]
fn unknown_dependency() {
    let text = BASE.replace(r#"depends_on = ["db"]"#, r#"depends_on = ["db", "cache"]"#);
    let msg = one_problem(
        &text,
        ProblemKind::UnknownNode,
        "depends_on",
        "node[1].depends_on[1]",
    );
    assert!(
        msg.contains("\"cache\"") && msg.contains("known nodes: db, app"),
        "{msg}"
    );
}

#[test]
fn dependency_cycle_is_named() {
    let text = BASE.replace(
        "image = \"kiln-etcd\"",
        "image = \"kiln-etcd\"\ndepends_on = [\"app\"]",
    );
    // The search starts at db, so the entry that closes the circle is app's.
    let msg = one_problem(
        &text,
        ProblemKind::DependencyCycle,
        "[\"db\"]",
        "node[1].depends_on[0]",
    );
    assert!(msg.contains("db -> app -> db"), "{msg}");
}

#[test]
fn self_dependency_is_a_cycle() {
    let text = BASE.replace(r#"depends_on = ["db"]"#, r#"depends_on = ["app"]"#);
    let msg = one_problem(
        &text,
        ProblemKind::DependencyCycle,
        "depends_on",
        "node[1].depends_on[0]",
    );
    assert!(msg.contains("app -> app"), "{msg}");
}

#[test]
fn duplicate_node_name() {
    let text = BASE.replace("name = \"app\"", "name = \"db\" # again");
    // The copy also repeats db's address? No: app keeps 10.0.0.12; but it now depends on itself.
    let (problems, msg) = invalid(&text);
    let dup = problems
        .iter()
        .find(|p| p.kind == ProblemKind::DuplicateName)
        .unwrap_or_else(|| panic!("{msg}"));
    let line = line_of(&text, "# again");
    assert_eq!((dup.line, dup.field.as_str()), (line, "node[1].name"));
    assert!(
        msg.contains(&format!(
            "{FILE}:{line}: node[1].name: node name \"db\" is used more than once"
        )),
        "{msg}"
    );
}

#[test]
fn duplicate_network_name() {
    let text = format!("{BASE}\n[[network]]\nname = \"net0\" # twice\nsubnet = \"10.1.0.0/24\"\n");
    one_problem(
        &text,
        ProblemKind::DuplicateName,
        "# twice",
        "network[1].name",
    );
}

#[test]
fn address_outside_subnet() {
    let text = BASE.replace("10.0.0.12/24", "10.0.1.12/24");
    let msg = one_problem(
        &text,
        ProblemKind::AddressOutsideSubnet,
        "10.0.1.12",
        "node[1].networks[0].address",
    );
    assert!(msg.contains("10.0.0.1 and 10.0.0.254"), "{msg}");
}

#[test]
fn broadcast_address_and_wrong_prefix_are_outside() {
    for bad in ["10.0.0.255/24", "10.0.0.12/16", "10.0.0.0/24"] {
        let text = BASE.replace("10.0.0.12/24", bad);
        let marker = format!("address = \"{bad}\"");
        one_problem(
            &text,
            ProblemKind::AddressOutsideSubnet,
            &marker,
            "node[1].networks[0].address",
        );
    }
}

#[test]
fn duplicate_address() {
    let text = BASE.replace("10.0.0.12/24", "10.0.0.11/24\" } ] # dup\n#\"");
    let msg = one_problem(
        &text,
        ProblemKind::DuplicateAddress,
        "# dup",
        "node[1].networks[0].address",
    );
    assert!(msg.contains("already used by node db"), "{msg}");
}

#[test]
fn unknown_network() {
    let text = BASE.replace(
        "{ network = \"net0\", address = \"10.0.0.12/24\" }",
        "{ network = \"net9\", address = \"10.0.0.12/24\" }",
    );
    let msg = one_problem(
        &text,
        ProblemKind::UnknownNetwork,
        "net9",
        "node[1].networks[0].network",
    );
    assert!(msg.contains("add a [[network]]"), "{msg}");
}

#[test]
fn bad_sizes() {
    for bad in ["1X", "0", "1000", "lots"] {
        let text = BASE.replace("size = \"1G\"", &format!("size = \"{bad}\""));
        one_problem(&text, ProblemKind::BadSize, "size", "node[0].disks[0].size");
    }
}

#[test]
fn bad_subnet() {
    let text = BASE.replace("10.0.0.0/24", "10.0.0.5/24");
    let msg = one_problem(
        &text,
        ProblemKind::BadAddress,
        "subnet",
        "network[0].subnet",
    );
    assert!(msg.contains("write 10.0.0.0/24"), "{msg}");
}

#[test]
fn scenario_problems_name_the_step() {
    let text = format!(
        "{BASE}\n[[scenario]]\nname = \"s\"\nsteps = [\n  {{ action = \"boot\" }},\n  {{ action = \"crash\", node = \"ghost\" }},\n  {{ action = \"sleep\", duration = \"5 parsecs\" }},\n  {{ action = \"partition\", nodes = [\"db\"], from = [\"db\"] }},\n]\n"
    );
    let (problems, msg) = invalid(&text);
    let got: Vec<(ProblemKind, &str, usize)> = problems
        .iter()
        .map(|p| (p.kind, p.field.as_str(), p.line))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                ProblemKind::UnknownNode,
                "scenario[0].steps[1].node",
                line_of(&text, "ghost")
            ),
            (
                ProblemKind::BadDuration,
                "scenario[0].steps[2].duration",
                line_of(&text, "parsecs")
            ),
            (
                ProblemKind::BadValue,
                "scenario[0].steps[3].from[0]",
                line_of(&text, "partition")
            ),
        ],
        "{msg}"
    );
}

#[test]
fn all_problems_are_reported_together() {
    let text = BASE
        .replace("size = \"1G\"", "size = \"1Q\"")
        .replace("depends_on = [\"db\"]", "depends_on = [\"nobody\"]");
    let (problems, msg) = invalid(&text);
    assert_eq!(problems.len(), 2, "{msg}");
    assert!(msg.starts_with("2 problems in cluster.toml:"), "{msg}");
}

/// Parses `text`, expects a syntax/shape error and returns (line, field, message).
fn syntax(text: &str) -> (usize, String, String) {
    match ClusterSpec::from_str(text, FILE) {
        Err(e @ SpecError::Syntax { .. }) => {
            let msg = e.to_string();
            let SpecError::Syntax { line, field, .. } = e else {
                unreachable!()
            };
            (line, field, msg)
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn unknown_field_is_rejected_with_place() {
    let text = BASE.replace("role = \"worker\"", "role = \"worker\"\nrolle = \"typo\"");
    let (line, field, msg) = syntax(&text);
    assert_eq!(line, line_of(&text, "rolle"));
    assert_eq!(field, "node[1].rolle", "{msg}");
    assert!(msg.contains("unknown field `rolle`"), "{msg}");
    assert!(msg.starts_with(&format!("{FILE}:{line}:")), "{msg}");
}

#[test]
fn wrong_type_and_unknown_role_are_rejected_with_field() {
    let text = BASE.replace("role = \"worker\"", "role = \"wizard\"");
    let (line, field, msg) = syntax(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "wizard"), "node[1].role"),
        "{msg}"
    );
    let text = BASE.replace("{ port = 2379 }", "{ port = \"http\" }");
    let (line, field, msg) = syntax(&text);
    assert_eq!(
        (line, field.as_str()),
        (line_of(&text, "\"http\""), "node[0].ready[1].port"),
        "{msg}"
    );
}

#[test]
fn unknown_step_action_and_step_fields_are_rejected() {
    let text = format!(
        "{BASE}\n[[scenario]]\nname = \"s\"\nsteps = [{{ action = \"explode\", node = \"db\" }}]\n"
    );
    let (line, _, msg) = syntax(&text);
    assert_eq!(line, line_of(&text, "explode"), "{msg}");
    assert!(msg.contains("explode"), "{msg}");
    let text = format!("{BASE}\n[[scenario]]\nname = \"s\"\nsteps = [{{ action = \"crash\", node = \"db\", force = true }}]\n");
    let (_, _, msg) = syntax(&text);
    assert!(msg.contains("force"), "{msg}");
}

#[test]
fn invalid_toml_reports_line_and_column() {
    let text = format!("{BASE}\n[[node]\n");
    let (line, _, msg) = syntax(&text);
    assert_eq!(line, text.lines().count());
    assert!(msg.starts_with(&format!("{FILE}:{line}:")), "{msg}");
}

#[test]
fn lifecycle_steps_parse_and_name_unknown_nodes() {
    let ok = format!(
        "{BASE}\n[[scenario]]\nname = \"s\"\nsteps = [\n  {{ action = \"freeze\", node = \"db\" }},\n  {{ action = \"thaw\", node = \"db\" }},\n  {{ action = \"shutdown\", node = \"db\" }},\n]\n"
    );
    let spec = ClusterSpec::from_str(&ok, "c.toml").unwrap();
    let actions: Vec<&str> = spec.scenarios[0].steps.iter().map(Step::action).collect();
    assert_eq!(actions, ["freeze", "thaw", "shutdown"]);
    let bad = ok.replace(
        "{ action = \"thaw\", node = \"db\" }",
        "{ action = \"thaw\", node = \"ghost\" }",
    );
    let (problems, _) = invalid(&bad);
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "scenario[0].steps[1].node");
    assert_eq!(problems[0].kind, ProblemKind::UnknownNode);
}
