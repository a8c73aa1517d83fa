//! What a scenario run produced: one record per step, phase timings, and the three forms a
//! person or a CI system reads: a summary table, `report.json` and JUnit XML.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It did what it had to.
    Passed,
    /// It did not; the message says why.
    Failed,
    /// It did not run because an earlier step failed.
    Skipped,
}

/// The part of a run a step belongs to, for per-phase wall times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Images and the `vmm` binary.
    Prepare,
    /// Booting nodes until ready.
    Boot,
    /// Checks of the healthy cluster.
    Checks,
    /// From the first injected fault on.
    Faults,
}

impl Phase {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Boot => "boot",
            Phase::Checks => "checks",
            Phase::Faults => "faults",
        }
    }
}

/// One step as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// Position in the scenario, from 1.
    pub index: usize,
    /// The spec's action name (`succeed`, `partition`, ...).
    pub action: String,
    /// One line saying what the step does.
    pub label: String,
    /// Phase of the run.
    pub phase: Phase,
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Output worth keeping (stdout of a command) or why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The faults injected while the step ran, from the nodes' fault logs, one line per
    /// node, device, rule and action (`node02 etcd (disk1): 3 × flush eio (block[0])`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<String>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Cluster name.
    pub cluster: String,
    /// Scenario name.
    pub scenario: String,
    /// Where the VMs ran (`kvm` or `emulated`) and why.
    pub host: String,
    /// The run directory (logs, reports).
    pub run_dir: String,
    /// Start, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Wall time of each phase that ran, seconds, in run order.
    pub phases: Vec<(Phase, f64)>,
    /// Every step, in order.
    pub steps: Vec<StepRecord>,
    /// The factor every wait and time limit was scaled by for this host's speed (1: as
    /// written; see `runner::pace`).
    pub pace: f64,
    /// Every boot a step waited for (the boot phase's, then restarts), with where its time
    /// went.
    pub boots: Vec<crate::cluster::BootTimes>,
}

impl RunReport {
    /// A report with no steps yet.
    pub fn new(cluster: &str, scenario: &str, host: &str, run_dir: &Path) -> RunReport {
        RunReport {
            cluster: cluster.to_string(),
            scenario: scenario.to_string(),
            host: host.to_string(),
            run_dir: run_dir.display().to_string(),
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            phases: Vec::new(),
            steps: Vec::new(),
            boots: Vec::new(),
            pace: 1.0,
        }
    }

    /// Adds `time` to `phase` (phases appear in the order they first ran).
    pub fn add_phase_time(&mut self, phase: Phase, time: Duration) {
        match self.phases.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, s)) => *s += time.as_secs_f64(),
            None => self.phases.push((phase, time.as_secs_f64())),
        }
    }

    /// Whether every step passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.outcome == Outcome::Passed)
    }

    /// Total wall time of the steps, seconds.
    pub fn total_seconds(&self) -> f64 {
        self.phases.iter().map(|(_, s)| s).sum()
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as JUnit XML: one test suite (the scenario), one test case per step.
    pub fn to_junit(&self) -> String {
        let failures = self.count(Outcome::Failed);
        let skipped = self.count(Outcome::Skipped);
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            xml,
            "<testsuites name=\"kiln\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">",
            self.steps.len(),
            self.total_seconds()
        );
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">",
            escape(&format!("{}/{}", self.cluster, self.scenario)),
            self.steps.len(),
            self.total_seconds()
        );
        for step in &self.steps {
            let _ = write!(
                xml,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                escape(&format!("{}.{}", self.scenario, step.phase.name())),
                escape(&format!("{:02} {}", step.index, step.label)),
                step.seconds
            );
            let message = step.message.as_deref().unwrap_or("");
            match step.outcome {
                Outcome::Passed => xml.push_str("/>\n"),
                Outcome::Failed => {
                    let _ = writeln!(
                        xml,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        escape(first_line(message)),
                        escape(message)
                    );
                }
                Outcome::Skipped => {
                    xml.push_str(
                        ">\n      <skipped message=\"an earlier step failed\"/>\n    </testcase>\n",
                    );
                }
            }
        }
        xml.push_str("  </testsuite>\n</testsuites>\n");
        xml
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.steps.iter().filter(|s| s.outcome == outcome).count()
    }

    /// The summary table printed at the end: step, result, duration; then phase times.
    pub fn summary_table(&self) -> String {
        let mut table = comfy_table::Table::new();
        table
            .load_style(comfy_table::presets::UTF8_FULL_CONDENSED)
            .set_header(["#", "step", "result", "time"]);
        for s in &self.steps {
            let result = match s.outcome {
                Outcome::Passed => "pass",
                Outcome::Failed => "FAIL",
                Outcome::Skipped => "skipped",
            };
            table.add_row([
                s.index.to_string(),
                truncate(&s.label, 72),
                result.to_string(),
                format!("{:.1}s", s.seconds),
            ]);
        }
        let phases = self
            .phases
            .iter()
            .map(|(p, s)| format!("{} {:.1}s", p.name(), s))
            .collect::<Vec<_>>()
            .join(", ");
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        let mut injected = String::new();
        for s in self.steps.iter().filter(|s| !s.faults.is_empty()) {
            for line in &s.faults {
                let _ = writeln!(injected, "  step {}: {line}", s.index);
            }
        }
        if !injected.is_empty() {
            injected.insert_str(0, "faults injected (from <run>/<node>/faults.jsonl):\n");
        }
        let slowest = crate::cluster::slowest(&self.boots)
            .map(|line| format!("{line}\n"))
            .unwrap_or_default();
        format!(
            "{table}\n{injected}{slowest}{} {verdict}: {} of {} steps passed in {:.1}s ({phases})\n",
            self.scenario,
            self.count(Outcome::Passed),
            self.steps.len(),
            self.total_seconds()
        )
    }

    /// Writes `report.json` and `junit.xml` into `dir` (each through a temporary name).
    pub fn write_files(&self, dir: &Path) -> std::io::Result<()> {
        write_atomically(&dir.join("report.json"), self.to_json().as_bytes())?;
        write_atomically(&dir.join("junit.xml"), self.to_junit().as_bytes())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max - 1).collect();
    s.push('…');
    s
}

/// XML text and attribute escaping; drops characters XML 1.0 cannot carry (guest output
/// may hold any byte).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunReport {
        let mut r = RunReport::new("reference", "fresh-smoke", "kvm", Path::new("/run/x"));
        let step = |index, outcome, message: Option<&str>| StepRecord {
            index,
            action: "succeed".into(),
            label: format!("succeed node01: echo <{index}> & \"q\""),
            phase: Phase::Checks,
            outcome,
            seconds: 1.25,
            message: message.map(str::to_string),
            faults: Vec::new(),
        };
        r.steps.push(step(1, Outcome::Passed, Some("ok")));
        r.steps.push(step(
            2,
            Outcome::Failed,
            Some("exit 1\nstderr: \u{1b}[31mred"),
        ));
        r.steps.push(step(3, Outcome::Skipped, None));
        r.add_phase_time(Phase::Boot, Duration::from_secs(10));
        r.add_phase_time(Phase::Checks, Duration::from_secs(2));
        r.add_phase_time(Phase::Boot, Duration::from_secs(1));
        r
    }

    #[test]
    fn junit_counts_escapes_and_marks_failures() {
        let xml = sample().to_junit();
        assert!(
            xml.contains("tests=\"3\" failures=\"1\" skipped=\"1\" time=\"13.000\""),
            "{xml}"
        );
        assert!(xml.contains("name=\"02 succeed node01: echo &lt;2&gt; &amp; &quot;q&quot;\""));
        assert!(xml.contains("<failure message=\"exit 1\">exit 1\nstderr: [31mred</failure>"));
        assert!(xml.contains("<skipped message=\"an earlier step failed\"/>"));
        assert!(!xml.contains('\u{1b}'), "control characters are not XML");
        // Balanced: every opened testcase is closed.
        let open = xml.matches("<testcase ").count();
        let closed = xml.matches("</testcase>").count() + xml.matches("\"/>\n").count()
            - xml.matches("<skipped").count();
        assert_eq!(open, closed, "{xml}");
    }

    #[test]
    fn json_has_steps_phases_and_verdict_inputs() {
        let r = sample();
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["steps"][1]["outcome"], "failed");
        assert_eq!(v["steps"][2]["outcome"], "skipped");
        assert_eq!(v["phases"][0][0], "boot");
        assert_eq!(v["phases"][0][1], 11.0);
        assert!(!r.passed());
    }

    #[test]
    fn summary_table_shows_each_step_and_the_verdict() {
        let text = sample().summary_table();
        assert!(text.contains("FAIL"), "{text}");
        assert!(text.contains("skipped"), "{text}");
        assert!(
            text.contains(
                "fresh-smoke FAILED: 1 of 3 steps passed in 13.0s (boot 11.0s, checks 2.0s)"
            ),
            "{text}"
        );
        let mut ok = sample();
        ok.steps.truncate(1);
        assert!(ok.summary_table().contains("PASSED"));
        assert!(
            !RunReport::new("c", "s", "kvm", Path::new("/")).passed(),
            "no steps is no pass"
        );
    }

    #[test]
    fn files_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        sample().write_files(dir.path()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(std::fs::read_to_string(dir.path().join("junit.xml"))
            .unwrap()
            .ends_with("</testsuites>\n"));
    }
}
