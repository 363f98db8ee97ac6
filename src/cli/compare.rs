//! `tandem eval compare`: two out-of-distribution reports (`tandem eval ood --json`) side by
//! side, row by row in items, with the rule a change to the grounder is kept by: no
//! difference-, multi-view- or tracking-row down by more than a tolerance, and the difference
//! rows' total not down. Written so that a rule stated before a training run is checked by a
//! command, not by hand.

use std::path::{Path, PathBuf};

use crate::cli::CliError;
use crate::cli::ood::RowResult;

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// The report kept until now (e.g. models/ood.json).
    pub before: PathBuf,
    /// The report of the candidate weights or code.
    pub after: PathBuf,
    /// Items a T1–T4 row may lose before the candidate fails.
    #[arg(long, default_value_t = 3)]
    pub max_row_drop: i64,
}

/// One row's model items before and after.
#[derive(Debug, PartialEq)]
pub struct RowChange {
    pub row: String,
    pub task: String,
    pub n: usize,
    pub before: i64,
    pub after: i64,
}

impl RowChange {
    fn guarded(&self) -> bool {
        ["T1 ", "T2 ", "T3 ", "T4 "].iter().any(|t| self.task.starts_with(t))
    }

    fn difference(&self) -> bool {
        self.task.starts_with("T1 ") || self.task.starts_with("T2 ")
    }
}

/// The comparison and its verdict.
#[derive(Debug)]
pub struct Comparison {
    pub rows: Vec<RowChange>,
    /// Rows in only one report (a report run with `--only`, or another row set).
    pub unmatched: Vec<String>,
    pub difference_total: (i64, i64),
    pub failing_rows: Vec<usize>,
}

impl Comparison {
    pub fn kept(&self) -> bool {
        self.failing_rows.is_empty() && self.difference_total.1 >= self.difference_total.0
    }
}

fn items(r: &RowResult) -> i64 {
    (r.model_acc05 * r.n as f64 / 100.0).round() as i64
}

pub fn compare(before: &[RowResult], after: &[RowResult], max_row_drop: i64) -> Comparison {
    let key = |r: &RowResult| (r.row.clone(), r.task.clone());
    let mut rows = Vec::new();
    let mut unmatched = Vec::new();
    for b in before {
        match after.iter().find(|a| key(a) == key(b)) {
            Some(a) if a.n == b.n => {
                rows.push(RowChange { row: b.row.clone(), task: b.task.clone(), n: b.n, before: items(b), after: items(a) })
            }
            Some(a) => unmatched.push(format!("{} / {} (n {} against {})", b.row, b.task, b.n, a.n)),
            None => unmatched.push(format!("{} / {} (before only)", b.row, b.task)),
        }
    }
    for a in after.iter().filter(|a| !before.iter().any(|b| key(a) == key(b))) {
        unmatched.push(format!("{} / {} (after only)", a.row, a.task));
    }
    let difference_total = rows.iter().filter(|r| r.difference()).fold((0, 0), |(b, a), r| (b + r.before, a + r.after));
    let failing_rows = (0..rows.len()).filter(|&i| rows[i].guarded() && rows[i].before - rows[i].after > max_row_drop).collect();
    Comparison { rows, unmatched, difference_total, failing_rows }
}

fn read(path: &Path) -> Result<Vec<RowResult>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| CliError(format!("{}: not an `eval ood --json` report: {e}", path.display())))
}

pub fn run(args: &CompareArgs) -> Result<(), CliError> {
    let c = compare(&read(&args.before)?, &read(&args.after)?, args.max_row_drop);
    if c.rows.is_empty() {
        return Err(CliError("the two reports share no row".into()));
    }
    print!("{}", table(&c, args.max_row_drop));
    Ok(())
}

fn table(c: &Comparison, max_row_drop: i64) -> String {
    let mut s = String::from("| items | task | n | model items before | after | change |\n|---|---|---:|---:|---:|---:|\n");
    for (i, r) in c.rows.iter().enumerate() {
        let mark = if c.failing_rows.contains(&i) { " (over the tolerance)" } else { "" };
        s.push_str(&format!("| {} | {} | {} | {} | {} | {:+}{mark} |\n", r.row, r.task, r.n, r.before, r.after, r.after - r.before));
    }
    let (b, a) = c.difference_total;
    s.push_str(&format!("\nT1/T2 rows together: {b} -> {a} items ({:+})\n", a - b));
    for u in &c.unmatched {
        s.push_str(&format!("not compared: {u}\n"));
    }
    s.push_str(&format!(
        "rule (no T1-T4 row down more than {max_row_drop} items, the T1/T2 total not down): {}\n",
        if c.kept() { "kept" } else { "not kept" }
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(row: &str, task: &str, acc: f64) -> RowResult {
        RowResult { row: row.into(), task: task.into(), n: 160, model_acc05: acc, baseline_acc05: 50.0, model_iou: 0.5, baseline_iou: 0.4 }
    }

    #[test]
    fn a_row_down_past_the_tolerance_fails_even_when_the_total_rises() {
        // 160 items a row: 2.5 % is 4 items, 1.875 % is 3.
        let before = [row("a", "T1 Registered_Diff", 80.0), row("a", "T2 Non_Registered_Diff", 80.0), row("a", "T3 multi_view", 70.0)];
        let after = [row("a", "T1 Registered_Diff", 77.5), row("a", "T2 Non_Registered_Diff", 85.0), row("a", "T3 multi_view", 68.125)];
        let c = compare(&before, &after, 3);
        assert_eq!(c.difference_total, (256, 260));
        assert_eq!(c.failing_rows, vec![0], "T1 lost 4 items; T3 lost 3, within the tolerance");
        assert!(!c.kept());
        assert!(compare(&before, &after, 4).kept());
    }

    #[test]
    fn the_difference_total_must_not_fall_and_unguarded_rows_may() {
        let before = [row("a", "T1 Registered_Diff", 80.0), row("a", "T6 patch", 100.0)];
        let after = [row("a", "T1 Registered_Diff", 79.375), row("a", "T6 patch", 90.0)];
        let c = compare(&before, &after, 3);
        assert!(c.failing_rows.is_empty(), "T6 is not guarded");
        assert_eq!(c.difference_total, (128, 127));
        assert!(!c.kept(), "one T1/T2 item lost in total");
    }

    #[test]
    fn rows_in_one_report_only_are_listed_not_compared() {
        let before = [row("a", "T1 Registered_Diff", 80.0), row("b", "T1 Registered_Diff", 80.0)];
        let after = [row("a", "T1 Registered_Diff", 80.0), row("c", "T1 Registered_Diff", 10.0)];
        let c = compare(&before, &after, 3);
        assert_eq!(c.rows.len(), 1);
        assert_eq!(c.unmatched.len(), 2);
        assert!(c.kept());
    }
}
