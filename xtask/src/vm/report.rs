//! What vm-test found on each kernel, from the guest's console: the markers its test script
//! prints around each test binary and libtest's own `test result:` line.
use std::{fmt::Write as _, time::Duration};

use super::{kernels::Kernel, qemu};

pub const BEGIN_MARKER: &str = "HOSTNETD-VM-TEST-BEGIN";
pub const END_MARKER: &str = "HOSTNETD-VM-TEST-END";
const UNAME_MARKER: &str = "HOSTNETD-VM-UNAME";
/// Followed by `hostnetd info --json` on one line.
pub const FEATURES_MARKER: &str = "HOSTNETD-VM-FEATURES";

/// One of the kernel's features as hostnetd's `info` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: String,
    pub available: bool,
    pub effect: String,
}

/// The features in a console line `HOSTNETD-VM-FEATURES {info JSON}`.
pub fn parse_features(line: &str) -> Option<Vec<Feature>> {
    let (_, json) = line.split_once(FEATURES_MARKER)?;
    let info: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    (info["features"].as_array()?.iter())
        .map(|feature| {
            Some(Feature {
                name: feature["name"].as_str()?.to_string(),
                available: feature["available"].as_bool()?,
                effect: feature["effect"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// The head of the README's supported-kernels table.
pub const KERNEL_TABLE_HEAD: &str =
    "| kernel (Debian package) | end-to-end tests in the matrix | what degrades |\n\
     | --- | --- | --- |\n";

/// The supported-kernels table's row of one kernel: what it passed, and what hostnetd does
/// differently there.
pub fn render_kernel_row(report: &KernelReport) -> String {
    let passed: u32 = (report.binaries.iter())
        .filter_map(|binary| binary.counts.as_ref())
        .map(|counts| counts.passed)
        .sum();
    let tests = format!(
        "{}: {} passed ({})",
        report.verdict(),
        passed,
        report.selected.join(", ")
    );
    let degraded: Vec<String> = (report.features.iter())
        .filter(|feature| !feature.available)
        .map(|feature| format!("no {}: {}", feature.name, feature.effect))
        .collect();
    let degraded = match (report.features.is_empty(), degraded.is_empty()) {
        (true, _) => "(not reported)".to_string(),
        (false, true) => "nothing".to_string(),
        (false, false) => degraded.join("; "),
    };
    // Debian's `uname -r` starts with the kernel's name and a dot (5.10.0-32-...), which is
    // how the README's rows are told apart.
    format!(
        "| {} ({} {}) | {tests} | {degraded} |",
        report.uname.as_deref().unwrap_or(&report.kernel),
        report.package,
        report.version
    )
}

/// libtest's counts for one test binary.
#[derive(Debug, PartialEq, Default, Clone, Copy)]
pub struct Counts {
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
    pub filtered_out: u32,
}

/// One test binary's run in the guest.
#[derive(Debug, PartialEq)]
pub struct BinaryResult {
    pub name: String,
    pub counts: Option<Counts>,
    /// None when the binary never finished (the machine died or timed out).
    pub exit_code: Option<i32>,
    pub wall: Option<Duration>,
    /// The tests libtest reported FAILED.
    pub failed_tests: Vec<String>,
}

impl BinaryResult {
    fn passed(&self) -> bool {
        self.exit_code == Some(0) && self.counts.is_some_and(|counts| counts.failed == 0)
    }
}

/// One kernel's run.
pub struct KernelReport {
    pub kernel: String,
    pub package: String,
    pub version: String,
    pub uname: Option<String>,
    pub accel: &'static str,
    pub boot_time: Option<Duration>,
    pub wall: Duration,
    /// The test binaries selected for this kernel, in order.
    pub selected: Vec<String>,
    pub binaries: Vec<BinaryResult>,
    /// What hostnetd's `info` said of the kernel before the tests.
    pub features: Vec<Feature>,
    /// Why the machine ended abnormally.
    pub failure: Option<String>,
    pub exit_code: Option<i32>,
}

impl KernelReport {
    pub fn new(
        kernel: &Kernel,
        accel: qemu::Accel,
        selected: Vec<String>,
        outcome: &qemu::Outcome,
    ) -> Self {
        let texts: Vec<(Duration, &str)> = (outcome.lines.iter())
            .map(|line| (line.at, line.text.as_str()))
            .collect();
        Self {
            kernel: kernel.name.to_string(),
            package: kernel.package.clone(),
            version: kernel.version.clone(),
            uname: texts.iter().find_map(|(_, text)| {
                let (_, rest) = text.split_once(UNAME_MARKER)?;
                Some(rest.trim().to_string())
            }),
            accel: accel.name(),
            boot_time: outcome.boot_time,
            wall: outcome.wall,
            selected,
            binaries: collect_binaries(&texts),
            features: texts
                .iter()
                .find_map(|(_, text)| parse_features(text))
                .unwrap_or_default(),
            failure: outcome.failure.clone(),
            exit_code: outcome.exit_code,
        }
    }

    pub fn passed(&self) -> bool {
        self.failure.is_none()
            && self.exit_code == Some(0)
            && self.selected.iter().all(|name| {
                (self.binaries.iter()).any(|binary| &binary.name == name && binary.passed())
            })
    }

    fn verdict(&self) -> String {
        if self.passed() {
            return "PASSED".into();
        }
        match &self.failure {
            Some(failure) => format!("FAILED: {failure}"),
            None => "FAILED".into(),
        }
    }

    /// The selected binaries' results, those that never ran included.
    fn rows(&self) -> Vec<Row<'_>> {
        (self.selected.iter())
            .map(|name| Row {
                name,
                result: self.binaries.iter().find(|binary| &binary.name == name),
            })
            .collect()
    }
}

struct Row<'a> {
    name: &'a str,
    result: Option<&'a BinaryResult>,
}

impl Row<'_> {
    fn cells(&self) -> [String; 6] {
        let Some(result) = self.result else {
            return [self.name, "-", "-", "-", "not run", "-"].map(str::to_string);
        };
        let count = |get: fn(&Counts) -> u32| {
            result
                .counts
                .as_ref()
                .map_or("-".into(), |c| get(c).to_string())
        };
        let outcome = match result.exit_code {
            Some(0) if result.passed() => "ok".to_string(),
            Some(code) => format!("FAILED (exit {code})"),
            None => "did not finish".to_string(),
        };
        [
            self.name.to_string(),
            count(|c| c.passed),
            count(|c| c.failed),
            count(|c| c.ignored),
            outcome,
            result.wall.map_or("-".into(), minutes),
        ]
    }
}

const COLUMNS: [&str; 6] = [
    "test binary",
    "passed",
    "failed",
    "ignored",
    "result",
    "time",
];

/// `1m05s`, or `4.2s` under a minute.
pub fn minutes(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let whole = duration.as_secs();
    format!("{}m{:02}s", whole / 60, whole % 60)
}

fn heading(report: &KernelReport) -> String {
    format!(
        "kernel {} ({} {}, uname -r {}), {}, boot {}, wall {}: {}",
        report.kernel,
        report.package,
        report.version,
        report.uname.as_deref().unwrap_or("unknown"),
        report.accel,
        report.boot_time.map_or("-".into(), minutes),
        minutes(report.wall),
        report.verdict()
    )
}

fn failed_tests(report: &KernelReport) -> Vec<String> {
    (report.binaries.iter())
        .flat_map(|binary| {
            (binary.failed_tests.iter()).map(move |test| format!("{}: {test}", binary.name))
        })
        .collect()
}

/// The summary as a plain-text table per kernel.
pub fn render_text(reports: &[KernelReport]) -> String {
    let mut text = String::new();
    for report in reports {
        let rows: Vec<[String; 6]> = report.rows().iter().map(Row::cells).collect();
        let widths: Vec<usize> = (0..COLUMNS.len())
            .map(|column| {
                (rows.iter().map(|row| row[column].len()))
                    .chain([COLUMNS[column].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = (cells.iter().zip(&widths))
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            format!("  {}\n", padded.join("  ").trim_end())
        };
        let _ = writeln!(text, "{}", heading(report));
        text.push_str(&line(&COLUMNS.map(str::to_string)));
        for row in &rows {
            text.push_str(&line(row));
        }
        for failed in failed_tests(report) {
            let _ = writeln!(text, "  failed: {failed}");
        }
        text.push('\n');
    }
    text
}

/// The summary as markdown (target/vm-test/summary.md).
pub fn render_markdown(reports: &[KernelReport]) -> String {
    let mut text = String::from("# cargo xtask vm-test\n\n");
    for report in reports {
        let _ = writeln!(text, "## {}\n", heading(report));
        let _ = writeln!(text, "| {} |", COLUMNS.join(" | "));
        let _ = writeln!(text, "|{}", " --- |".repeat(COLUMNS.len()));
        for row in report.rows() {
            let _ = writeln!(text, "| {} |", row.cells().join(" | "));
        }
        let failed = failed_tests(report);
        if !failed.is_empty() {
            text.push_str("\nFailed tests:\n\n");
            for test in failed {
                let _ = writeln!(text, "- `{test}`");
            }
        }
        text.push('\n');
    }
    text
}

/// The test binaries' results from the console's lines (with when each came).
pub fn collect_binaries(lines: &[(Duration, &str)]) -> Vec<BinaryResult> {
    let mut results: Vec<BinaryResult> = Vec::new();
    let mut started = Duration::ZERO;
    // libtest's closing list of failures, which the "test NAME ... FAILED" lines can miss:
    // a child process's output (not captured by libtest) may land inside them.
    let mut failure_list: Option<Vec<String>> = None;
    for (at, text) in lines {
        if let Some((_, rest)) = text.split_once(BEGIN_MARKER) {
            started = *at;
            failure_list = None;
            results.push(BinaryResult {
                name: rest.trim().to_string(),
                counts: None,
                exit_code: None,
                wall: None,
                failed_tests: Vec::new(),
            });
            continue;
        }
        let Some(current) = results.last_mut() else {
            continue;
        };
        if current.exit_code.is_some() {
            continue;
        }
        if let Some((_, rest)) = text.split_once(END_MARKER) {
            current.exit_code = rest.split_whitespace().nth(1).and_then(|c| c.parse().ok());
            current.wall = Some(at.saturating_sub(started));
        } else if let Some(counts) = parse_test_result(text) {
            current.counts = Some(counts);
            if let Some(listed) = failure_list.take().filter(|list| !list.is_empty()) {
                current.failed_tests = listed;
            }
        } else if text.trim_end() == "failures:" {
            // Twice: before the failures' output, then before their names; the last counts.
            failure_list = Some(Vec::new());
        } else if let Some(list) = failure_list.as_mut() {
            if let Some(name) = listed_failure(text) {
                list.push(name);
            }
        } else if let Some(test) = failed_test(text) {
            current.failed_tests.push(test);
        }
    }
    results
}

/// A name in libtest's list of failures: four spaces, then one word.
fn listed_failure(line: &str) -> Option<String> {
    let name = line.strip_prefix("    ")?;
    (!name.is_empty() && !name.contains(char::is_whitespace)).then(|| name.to_string())
}

/// libtest's summary: "test result: FAILED. 3 passed; 1 failed; 2 ignored; 0 measured; 4
/// filtered out; finished in 1.23s".
pub fn parse_test_result(line: &str) -> Option<Counts> {
    let (_, rest) = line.split_once("test result: ")?;
    let (_, rest) = rest.split_once(". ")?;
    let mut counts = Counts::default();
    for part in rest.split(';') {
        let mut words = part.split_whitespace();
        let (Some(number), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(number) = number.parse() else {
            continue;
        };
        match what {
            "passed" => counts.passed = number,
            "failed" => counts.failed = number,
            "ignored" => counts.ignored = number,
            "filtered" => counts.filtered_out = number,
            _ => {}
        }
    }
    Some(counts)
}

/// The test of libtest's "test NAME ... FAILED" line.
fn failed_test(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("test ")?;
    let name = rest.strip_suffix(" ... FAILED")?;
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_result_lines_give_their_counts() {
        assert_eq!(
            parse_test_result(
                "test result: FAILED. 3 passed; 1 failed; 2 ignored; 0 measured; 4 filtered out; finished in 1.23s"
            ),
            Some(Counts {
                passed: 3,
                failed: 1,
                ignored: 2,
                filtered_out: 4
            })
        );
        assert_eq!(
            parse_test_result("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"),
            Some(Counts::default())
        );
        assert_eq!(parse_test_result("test ownership ... ok"), None);
    }

    #[test]
    fn binaries_are_delimited_by_the_markers() {
        let seconds = Duration::from_secs;
        let lines = [
            (seconds(5), "HOSTNETD-VM-TEST-BEGIN ownership"),
            (seconds(6), "test bind_owned ... ok"),
            (seconds(6), "test bind_foreign ... hostnetd: a child's own output"),
            (seconds(7), "FAILED"),
            (seconds(7), "test bind_other ... FAILED"),
            (seconds(7), "failures:"),
            (seconds(7), ""),
            (seconds(7), "---- bind_foreign stdout ----"),
            (seconds(7), "    indented output"),
            (seconds(7), "failures:"),
            (seconds(7), "    bind_foreign"),
            (seconds(7), "    bind_other"),
            (seconds(7), ""),
            (
                seconds(8),
                "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 2.0s",
            ),
            (seconds(9), "HOSTNETD-VM-TEST-END ownership 101"),
            (seconds(10), "HOSTNETD-VM-TEST-BEGIN churn"),
            (seconds(12), "test churn ... FAILED"),
        ];
        let results = collect_binaries(&lines);
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].name, "ownership");
        assert_eq!(results[0].exit_code, Some(101));
        assert_eq!(results[0].wall, Some(seconds(4)));
        assert_eq!(results[0].failed_tests, ["bind_foreign", "bind_other"]);
        assert_eq!(results[0].counts.map(|c| c.failed), Some(1));
        assert_eq!(results[1].name, "churn");
        assert_eq!(results[1].exit_code, None, "the machine died during churn");
        assert_eq!(results[1].failed_tests, ["churn"], "seen before it died");
        assert!(!results[1].passed());
    }

    fn report(failure: Option<&str>, exit_code: Option<i32>) -> KernelReport {
        let seconds = Duration::from_secs;
        let lines = [
            (seconds(5), "HOSTNETD-VM-TEST-BEGIN ownership"),
            (
                seconds(8),
                "test result: ok. 6 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 2.0s",
            ),
            (seconds(9), "HOSTNETD-VM-TEST-END ownership 0"),
        ];
        KernelReport {
            kernel: "6.1".into(),
            package: "linux-image-6.1.0-57-cloud-amd64-unsigned".into(),
            version: "6.1.192-3".into(),
            uname: Some("6.1.0-57-cloud-amd64".into()),
            accel: "TCG",
            boot_time: Some(seconds(6)),
            wall: seconds(70),
            selected: vec!["ownership".into(), "churn".into()],
            binaries: collect_binaries(&lines),
            features: parse_features(
                r#"HOSTNETD-VM-FEATURES {"version":"0.1.0","features":[{"name":"set_retval","available":false,"effect":"every refused bind gets EPERM"},{"name":"btf","available":true,"effect":"required"}]}"#,
            )
            .unwrap(),
            failure: failure.map(str::to_string),
            exit_code,
        }
    }

    #[test]
    fn the_kernel_table_says_what_degrades() {
        let row = render_kernel_row(&report(None, Some(0)));
        assert!(
            row.starts_with("| 6.1.0-57-cloud-amd64 (linux-image-6.1.0-57"),
            "{row}"
        );
        assert!(row.contains("6 passed (ownership, churn)"), "{row}");
        assert!(
            row.ends_with("| no set_retval: every refused bind gets EPERM |"),
            "{row}"
        );
        assert_eq!(parse_features("HOSTNETD-VM-FEATURES not json"), None);
    }

    #[test]
    fn a_binary_that_never_ran_fails_the_kernel_and_shows_in_the_table() {
        let report = report(Some("timed out after 120 minutes; killed"), None);
        assert!(!report.passed());
        let text = render_text(std::slice::from_ref(&report));
        assert!(
            text.starts_with(
                "kernel 6.1 (linux-image-6.1.0-57-cloud-amd64-unsigned 6.1.192-3, uname -r \
                 6.1.0-57-cloud-amd64), TCG, boot 6.0s, wall 1m10s: FAILED: timed out after \
                 120 minutes; killed\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  ownership    6       0       1        ok       4.0s\n"),
            "{text}"
        );
        assert!(
            text.contains("  churn        -       -       -        not run  -\n"),
            "{text}"
        );
        let markdown = render_markdown(&[report]);
        assert!(
            markdown.contains("| churn | - | - | - | not run | - |"),
            "{markdown}"
        );
    }

    #[test]
    fn a_kernel_passes_when_every_selected_binary_did() {
        let mut report = report(None, Some(0));
        report.selected.pop();
        assert!(report.passed());
        assert!(render_text(&[report]).contains(": PASSED\n"));
    }

    #[test]
    fn durations_read_as_seconds_or_minutes() {
        assert_eq!(minutes(Duration::from_millis(4200)), "4.2s");
        assert_eq!(minutes(Duration::from_secs(65)), "1m05s");
    }
}
