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

/// BASE with one more network `back` that no node is on, and a scenario of `steps`.
fn with_steps(steps: &str) -> String {
    format!(
        "{BASE}\n[[network]]\nname = \"back\"\nsubnet = \"10.9.0.0/24\"\n\n[[scenario]]\nname = \"s\"\nsteps = [\n{steps}\n]\n"
    )
}

#[test]
fn fault_steps_parse_with_the_vmms_rule_fields() {
    let text = with_steps(
        r#"  { action = "fault", node = "db", disk = "data", rule = { op = "flush", action = "eio", count = 3 } },
  { action = "fault", node = "db", network = "net0", rule = { dir = "tx", action = "delay", delay_ms = 50, ethertype = 0x0800 }, seed = 7 },
  { action = "fault", node = "db", disk = "root", rule = { action = "torn", keep_bytes = 2048, after = 2 } },
  { action = "clear_faults", node = "db" },
  { action = "power_cut", node = "db" },
  { action = "power_cut", node = "db", keep = 0.25 },"#,
    );
    let spec = ClusterSpec::from_str(&text, FILE).unwrap();
    let steps = &spec.scenarios[0].steps;
    let actions: Vec<&str> = steps.iter().map(Step::action).collect();
    assert_eq!(
        actions,
        [
            "fault",
            "fault",
            "fault",
            "clear_faults",
            "power_cut",
            "power_cut"
        ]
    );
    let Step::Fault {
        disk, rule, seed, ..
    } = &steps[0]
    else {
        panic!("{:?}", steps[0])
    };
    assert_eq!((disk.as_deref(), *seed), (Some("data"), None));
    let target = FaultTarget::of(disk.as_deref(), None).unwrap();
    let FaultRule::Block(block) = FaultRule::parse(&target, rule).unwrap() else {
        panic!("a disk takes a block rule")
    };
    use devices::fault::rules::{BlockActionKind, BlockOpKind, NetDirKind};
    assert_eq!(
        (block.op, block.action, block.count, block.disk),
        (Some(BlockOpKind::Flush), BlockActionKind::Eio, 3, None)
    );
    let Step::Fault {
        network,
        rule,
        seed,
        ..
    } = &steps[1]
    else {
        panic!("{:?}", steps[1])
    };
    assert_eq!(*seed, Some(7));
    let target = FaultTarget::of(None, network.as_deref()).unwrap();
    let FaultRule::Net(net) = FaultRule::parse(&target, rule).unwrap() else {
        panic!("a network takes a net rule")
    };
    assert_eq!(
        (net.dir, net.delay_ms, net.ethertype),
        (NetDirKind::Tx, Some(50), Some(0x0800))
    );
    assert_eq!(
        steps[5],
        Step::PowerCut {
            node: "db".into(),
            keep: Some(0.25)
        }
    );
    // The steps survive a round trip (the runner's reports and `--keep` re-read them).
    let again = ClusterSpec::from_str(&toml::to_string(&spec).unwrap(), FILE).unwrap();
    assert_eq!(again, spec);
}

#[test]
fn fault_steps_name_unknown_disks_and_networks() {
    let text = with_steps(
        r#"  { action = "fault", node = "db", disk = "dta", rule = { action = "eio" } },"#,
    );
    let msg = one_problem(
        &text,
        ProblemKind::UnknownDisk,
        "dta",
        "scenario[0].steps[0].disk",
    );
    assert!(
        msg.contains("node db has no disk named \"dta\"; its named disks: data (and root"),
        "{msg}"
    );
    let text = with_steps(
        r#"  { action = "fault", node = "db", network = "back", rule = { action = "drop" } },"#,
    );
    let msg = one_problem(
        &text,
        ProblemKind::UnknownNetwork,
        "back\", rule",
        "scenario[0].steps[0].network",
    );
    assert!(
        msg.contains("node db is not attached to network \"back\"; its networks: net0"),
        "{msg}"
    );
    // A node without named disks says how to name one.
    let text = with_steps(
        r#"  { action = "fault", node = "app", disk = "data", rule = { action = "eio" } },"#,
    );
    let msg = one_problem(
        &text,
        ProblemKind::UnknownDisk,
        "node = \"app\"",
        "scenario[0].steps[0].disk",
    );
    assert!(
        msg.contains("(none)") && msg.contains("give the disk a name"),
        "{msg}"
    );
}

#[test]
fn fault_steps_need_exactly_one_device() {
    for (step, needle) in [
        (
            r#"  { action = "fault", node = "db", rule = { action = "eio" } },"#,
            "needs disk = NAME",
        ),
        (
            r#"  { action = "fault", node = "db", disk = "data", network = "net0", rule = { action = "eio" } },"#,
            "not both",
        ),
    ] {
        let text = with_steps(step);
        let msg = one_problem(
            &text,
            ProblemKind::BadValue,
            "action = \"fault\"",
            "scenario[0].steps[0].disk",
        );
        assert!(msg.contains(needle), "{msg}");
    }
}

#[test]
fn fault_rules_are_checked_by_the_vmms_own_parser() {
    let cases = [
        // Unknown and misplaced fields, wrong types.
        (
            r#"disk = "data", rule = { acton = "eio" }"#,
            "unknown field `acton`",
        ),
        (
            r#"disk = "data", rule = { action = "eio", dir = "tx" }"#,
            "unknown field `dir`",
        ),
        (
            r#"disk = "data", rule = { action = "explode" }"#,
            "unknown variant `explode`",
        ),
        (
            r#"disk = "data", rule = { action = "eio", count = "x" }"#,
            "invalid type",
        ),
        (
            r#"network = "net0", rule = { action = "eio" }"#,
            "unknown variant `eio`",
        ),
        // The step picks the device; the rule does not.
        (
            r#"disk = "data", rule = { action = "eio", disk = 0 }"#,
            "remove disk from the rule",
        ),
        (
            r#"network = "net0", rule = { action = "drop", nic = 1 }"#,
            "remove nic from the rule",
        ),
        (
            r#"disk = "data", rule = { action = "eio", seed = 3 }"#,
            "seed is a field of the fault step",
        ),
        // The vmm's consistency checks, with its words.
        (
            r#"disk = "data", rule = { action = "torn" }"#,
            "action \"torn\" needs keep_bytes",
        ),
        (
            r#"disk = "data", rule = { action = "delay" }"#,
            "needs delay_ms",
        ),
        (
            r#"disk = "data", rule = { action = "eio", probability = 2.0 }"#,
            "probability = 2 is not between 0 and 1",
        ),
        (
            r#"disk = "data", rule = { op = "flush", action = "eio", from = 0, to = 512 }"#,
            "flush requests have no byte range",
        ),
        (
            r#"network = "net0", rule = { action = "drop", ip_proto = 1, port = 80 }"#,
            "port only matches TCP",
        ),
    ];
    for (fields, needle) in cases {
        let text = with_steps(&format!(
            "  {{ action = \"fault\", node = \"db\", {fields} }},"
        ));
        let (problems, msg) = invalid(&text);
        assert!(!problems.is_empty(), "{fields}");
        for p in &problems {
            assert_eq!(p.kind, ProblemKind::BadFaultRule, "{msg}");
            assert_eq!(p.field, "scenario[0].steps[0].rule", "{msg}");
            assert_eq!(p.line, line_of(&text, "action = \"fault\""), "{msg}");
            assert!(
                !p.message.contains("block[0]") && !p.message.contains("net[0]"),
                "{msg}"
            );
        }
        assert!(msg.contains(needle), "{fields}: {msg}");
    }
    // One line per mistake, worded as the vmm words it for a rules file.
    let vmm = devices::fault::FaultRules::from_toml(
        "[[block]]\naction = \"torn\"\ndelay_ms = 5\n",
        "f.toml",
    )
    .unwrap_err();
    let text = with_steps(
        r#"  { action = "fault", node = "db", disk = "data", rule = { action = "torn", delay_ms = 5 } },"#,
    );
    let (problems, _) = invalid(&text);
    let ours: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
    let theirs: Vec<String> = vmm
        .0
        .iter()
        .map(|l| l.trim_start_matches("f.toml: block[0]: ").to_string())
        .collect();
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 2);
}

#[test]
fn power_cut_keep_is_a_fraction() {
    let text = with_steps(r#"  { action = "power_cut", node = "db", keep = 1.5 },"#);
    let msg = one_problem(
        &text,
        ProblemKind::BadValue,
        "power_cut",
        "scenario[0].steps[0].keep",
    );
    assert!(msg.contains("use 0.0 to 1.0"), "{msg}");
    let text = with_steps(r#"  { action = "clear_faults", node = "ghost" },"#);
    one_problem(
        &text,
        ProblemKind::UnknownNode,
        "ghost",
        "scenario[0].steps[0].node",
    );
}

#[test]
fn disks_take_a_cache_mode() {
    let text = BASE.replace(
        r#"{ name = "data", size = "1G" }"#,
        r#"{ name = "data", size = "1G", cache = "writeback" }, { size = "1G", cache = "writethrough" }"#,
    );
    let spec = ClusterSpec::from_str(&text, FILE).unwrap();
    let db = spec.node("db").unwrap();
    assert!(db.disks[0].writeback() && !db.disks[1].writeback());
    let text = BASE.replace(
        r#"{ name = "data", size = "1G" }"#,
        r#"{ name = "data", size = "1G", cache = "fast" }"#,
    );
    let (line, field, msg) = syntax(&text);
    assert_eq!(line, line_of(&text, "fast"), "{msg}");
    assert!(field.starts_with("node[0].disks[0]"), "{msg}");
    assert!(msg.contains("writeback"), "{msg}");
}
