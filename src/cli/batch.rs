//! `tandem batch`: ground diff or series over a manifest of pairs, restartable and sharded deterministically (a cluster job array runs it unchanged), and `--merge` to join the shards' results.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cli::series::{load_series, report};
use crate::cli::{Cli, CliError, MethodArg};
use crate::fsutil::write_atomic;
use crate::grounding::series::find_changes;
use crate::grounding::{Engine, Method};

#[derive(Args, Debug)]
pub struct BatchArgs {
    /// CSV with a header naming the columns `prior` and `current` (paths, relative to the
    /// manifest's folder unless absolute), and optionally `id` (the result's file name; the row
    /// number otherwise) and `kind` (`diff` or `series`; series when both are folders).
    #[arg(required_unless_present = "merge", conflicts_with = "merge")]
    pub manifest: Option<PathBuf>,
    /// Folder for the results (one JSON file per pair) and the shards' summaries.
    #[arg(long, required_unless_present = "merge", conflicts_with = "merge")]
    pub out: Option<PathBuf>,
    /// Run only shard K of N (K from 0): the rows whose number modulo N is K. Without it,
    /// SLURM_ARRAY_TASK_ID (less SLURM_ARRAY_TASK_MIN) of SLURM_ARRAY_TASK_COUNT, else all rows.
    #[arg(long)]
    pub shard: Option<String>,
    /// Join the results of every shard in this folder into merged.json there.
    #[arg(long)]
    pub merge: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "model")]
    pub method: MethodArg,
}

/// One row of the manifest.
#[derive(Clone, Debug)]
struct Pair {
    row: usize,
    id: String,
    kind: Kind,
    prior: String,
    current: String,
    base: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Diff,
    Series,
}

/// What a shard did, written when it finishes: the merge checks the shards against it.
#[derive(Serialize, Deserialize, Debug)]
struct ShardSummary {
    manifest: String,
    manifest_sha256: String,
    rows: usize,
    shard: usize,
    shards: usize,
    ids: Vec<String>,
    computed: usize,
    skipped: usize,
    failed: usize,
}

/// Splits one CSV line into fields (double quotes may enclose a field; `""` inside is a quote).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if field.trim().is_empty() => {
                // Spaces before an opening quote are not part of the field.
                field.clear();
                quoted = true;
            }
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return Err("an unclosed quote".into());
    }
    fields.push(field);
    Ok(fields.into_iter().map(|f| f.trim().to_string()).collect())
}

/// A result's file name must be a plain name that every shard spells the same way.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && !id.starts_with('.') && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn read_manifest(path: &Path) -> Result<(Vec<Pair>, String), CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError(format!("cannot read the manifest: {e} ({})", path.display())))?;
    let sha = {
        use sha2::{Digest, Sha256};
        Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let text = String::from_utf8(bytes).map_err(|_| CliError(format!("the manifest is not UTF-8 text ({})", path.display())))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let (_, header) = lines.next().ok_or_else(|| CliError(format!("the manifest is empty ({})", path.display())))?;
    let header = csv_fields(header.trim_start_matches('\u{feff}')).map_err(|e| CliError(format!("manifest header: {e}")))?;
    let column = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(prior_col), Some(current_col)) = (column("prior"), column("current")) else {
        return Err(CliError(format!("the manifest's header must name the columns prior and current ({})", path.display())));
    };
    let (id_col, kind_col) = (column("id"), column("kind"));
    let mut pairs: Vec<Pair> = Vec::new();
    for (line_index, line) in lines {
        let line_no = line_index + 1;
        let fields = csv_fields(line).map_err(|e| CliError(format!("manifest line {line_no}: {e}")))?;
        let get = |c: usize| fields.get(c).cloned().unwrap_or_default();
        let (prior, current) = (get(prior_col), get(current_col));
        if prior.is_empty() || current.is_empty() {
            return Err(CliError(format!("manifest line {line_no}: a prior and a current are needed")));
        }
        let row = pairs.len();
        let id = id_col.map(get).filter(|s| !s.is_empty()).unwrap_or_else(|| format!("row-{:05}", row + 1));
        if !valid_id(&id) {
            return Err(CliError(format!("manifest line {line_no}: the id {id:?} must be letters, digits, '.', '_' or '-'")));
        }
        if pairs.iter().any(|p| p.id == id) {
            return Err(CliError(format!("manifest line {line_no}: the id {id:?} is used twice")));
        }
        let kind = match kind_col.map(get).unwrap_or_default().to_ascii_lowercase().as_str() {
            "diff" => Kind::Diff,
            "series" => Kind::Series,
            "" => {
                let is_dir = |p: &str| resolve(&base, p).is_dir();
                if is_dir(&prior) && is_dir(&current) { Kind::Series } else { Kind::Diff }
            }
            other => return Err(CliError(format!("manifest line {line_no}: kind {other:?} is neither diff nor series"))),
        };
        pairs.push(Pair { row, id, kind, prior, current, base: base.clone() });
    }
    if pairs.is_empty() {
        return Err(CliError(format!("the manifest lists no pairs ({})", path.display())));
    }
    Ok((pairs, sha))
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}

/// (K, N) from `--shard K/N`, else from SLURM's job array variables, else (0, 1).
fn shard_of(arg: Option<&str>) -> Result<(usize, usize), CliError> {
    let parse = |k: &str, n: &str, what: &str| -> Result<(usize, usize), CliError> {
        let (k, n) = (k.trim().parse::<usize>(), n.trim().parse::<usize>());
        match (k, n) {
            (Ok(k), Ok(n)) if n >= 1 && k < n => Ok((k, n)),
            _ => Err(CliError(format!("{what} must be K/N with 0 ≤ K < N"))),
        }
    };
    if let Some(s) = arg {
        let (k, n) = s.split_once('/').ok_or_else(|| CliError(format!("--shard must be K/N, got {s:?}")))?;
        return parse(k, n, "--shard");
    }
    match (std::env::var("SLURM_ARRAY_TASK_ID"), std::env::var("SLURM_ARRAY_TASK_COUNT")) {
        (Ok(id), Ok(count)) => {
            // Arrays may start at 1 (--array=1-8): the shard is the task's place in the array.
            let min: usize = std::env::var("SLURM_ARRAY_TASK_MIN").ok().and_then(|m| m.trim().parse().ok()).unwrap_or(0);
            let id: usize = id.trim().parse().map_err(|_| CliError(format!("SLURM_ARRAY_TASK_ID is not a number ({id:?})")))?;
            let k = id.checked_sub(min).ok_or_else(|| CliError("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN".into()))?;
            parse(&k.to_string(), &count, "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT")
        }
        _ => Ok((0, 1)),
    }
}

fn results_dir(out: &Path) -> PathBuf {
    out.join("results")
}

fn result_path(out: &Path, id: &str) -> PathBuf {
    results_dir(out).join(format!("{id}.json"))
}

/// Whether a finished, successful result for `id` is already in `out` (errors are retried).
fn done(out: &Path, id: &str) -> bool {
    std::fs::read(result_path(out, id)).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok()).is_some_and(|v| v["status"] == "ok")
}

/// Grounds one pair; the result has no timings, so that any shard's run reads the same.
fn ground_pair(engine: &Engine, pair: &Pair, method: Method) -> Result<Value, CliError> {
    let (prior, current) = (resolve(&pair.base, &pair.prior), resolve(&pair.base, &pair.current));
    match pair.kind {
        Kind::Diff => {
            let (a, b) = (crate::cli::ground::load_gray(&prior)?, crate::cli::ground::load_gray(&current)?);
            let out = engine.diff(&a, &b, method);
            Ok(json!({
                "method": out.method,
                "model": if out.method == Method::Model { engine.model_name() } else { None },
                "proposals": out.proposals,
            }))
        }
        Kind::Series => {
            let (p, c) = (load_series(&prior)?, load_series(&current)?);
            let out = find_changes(engine, &p, &c, method, 0.0, &mut |_| {}, None)?;
            let mut v = report(engine, Path::new(&pair.prior), Path::new(&pair.current), &p, &c, &out);
            if let Value::Object(m) = &mut v {
                m.remove("millis");
                m.remove("device");
                if let Some(Value::Object(rigid)) = m.get_mut("rigid") {
                    rigid.remove("millis");
                    rigid.remove("decode_millis");
                }
            }
            Ok(v)
        }
    }
}

pub fn run(cli: &Cli, args: &BatchArgs) -> Result<(), CliError> {
    if let Some(dir) = &args.merge {
        return merge(dir);
    }
    let (Some(manifest), Some(out)) = (&args.manifest, &args.out) else {
        return Err(CliError("give a manifest and --out, or --merge DIR".into()));
    };
    let (shard, shards) = shard_of(args.shard.as_deref())?;
    let (pairs, sha) = read_manifest(manifest)?;
    if out.exists() && !out.is_dir() {
        return Err(CliError(format!("--out is not a folder ({})", out.display())));
    }
    std::fs::create_dir_all(results_dir(out)).map_err(|e| CliError(format!("cannot create {}: {e}", out.display())))?;
    let mine: Vec<&Pair> = pairs.iter().filter(|p| p.row % shards == shard).collect();
    let todo: Vec<&&Pair> = mine.iter().filter(|p| !done(out, &p.id)).collect();
    eprintln!("shard {shard}/{shards}: {} of {} pair(s), {} already done", mine.len(), pairs.len(), mine.len() - todo.len());
    let engine = crate::cli::engine(cli);
    let method: Method = args.method.into();
    let mut progress = super::progress::Progress::new(format!("shard {shard}/{shards} pairs"));
    let mut failed = 0;
    for (k, pair) in todo.iter().enumerate() {
        progress.update(k, todo.len());
        let (status, body) = match ground_pair(&engine, pair, method) {
            Ok(result) => ("ok", json!({"result": result})),
            Err(CliError(e)) => {
                failed += 1;
                ("error", json!({"error": e}))
            }
        };
        let mut record =
            json!({"id": pair.id, "row": pair.row, "kind": pair.kind, "prior": pair.prior, "current": pair.current, "status": status});
        if let (Value::Object(r), Value::Object(b)) = (&mut record, body) {
            r.extend(b);
        }
        let path = result_path(out, &pair.id);
        write_atomic(&path, &serde_json::to_vec_pretty(&record)?).map_err(|e| CliError(format!("cannot write {}: {e}", path.display())))?;
    }
    progress.update(todo.len(), todo.len());
    let summary = ShardSummary {
        manifest: manifest.display().to_string(),
        manifest_sha256: sha,
        rows: pairs.len(),
        shard,
        shards,
        ids: mine.iter().map(|p| p.id.clone()).collect(),
        computed: todo.len() - failed,
        skipped: mine.len() - todo.len(),
        failed,
    };
    let path = out.join(format!("shard-{shard}-of-{shards}.json"));
    write_atomic(&path, &serde_json::to_vec_pretty(&summary)?).map_err(|e| CliError(format!("cannot write {}: {e}", path.display())))?;
    println!("shard {shard}/{shards}: {} computed, {} skipped (done before), {} failed", summary.computed, summary.skipped, failed);
    Ok(())
}

/// Joins every shard's results in `dir` into `dir/merged.json`, in manifest order; refuses
/// shards of different manifests and a result missing for any row.
fn merge(dir: &Path) -> Result<(), CliError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CliError(format!("cannot read {}: {e}", dir.display())))?;
    let mut summaries: Vec<ShardSummary> = Vec::new();
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for path in names {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("shard-") && name.ends_with(".json") {
            let bytes = std::fs::read(&path).map_err(|e| CliError(format!("cannot read {}: {e}", path.display())))?;
            summaries.push(serde_json::from_slice(&bytes).map_err(|e| CliError(format!("not a shard summary: {e} ({})", path.display())))?);
        }
    }
    let first = summaries.first().ok_or_else(|| CliError(format!("no shard summaries (shard-K-of-N.json) in {}", dir.display())))?;
    if let Some(other) = summaries.iter().find(|s| s.manifest_sha256 != first.manifest_sha256) {
        return Err(CliError(format!("shards of different manifests ({} and {})", first.manifest, other.manifest)));
    }
    let rows = first.rows;
    let mut ids: Vec<String> = summaries.iter().flat_map(|s| s.ids.iter().cloned()).collect();
    ids.sort();
    ids.dedup();
    let mut records: Vec<Value> = Vec::new();
    for id in &ids {
        let path = result_path(dir, id);
        let Ok(bytes) = std::fs::read(&path) else { continue };
        records.push(serde_json::from_slice(&bytes).map_err(|e| CliError(format!("a damaged result: {e} ({})", path.display())))?);
    }
    records.sort_by_key(|r| r["row"].as_u64().unwrap_or(u64::MAX));
    records.dedup_by_key(|r| r["row"].as_u64());
    let present: std::collections::BTreeSet<u64> = records.iter().filter_map(|r| r["row"].as_u64()).collect();
    let missing: Vec<u64> = (0..rows as u64).filter(|r| !present.contains(r)).collect();
    if let Some(row) = missing.first() {
        return Err(CliError(format!(
            "{} of {rows} pair(s) have no result (first: manifest row {}); run the missing shards, then merge again",
            missing.len(),
            row + 1
        )));
    }
    let failed = records.iter().filter(|r| r["status"] != "ok").count();
    let merged = json!({"manifest_sha256": first.manifest_sha256, "pairs": records.len(), "failed": failed, "results": records});
    let path = dir.join("merged.json");
    write_atomic(&path, &serde_json::to_vec_pretty(&merged)?).map_err(|e| CliError(format!("cannot write {}: {e}", path.display())))?;
    println!("merged {} pair(s) from {} shard summary file(s) into {} ({failed} failed)", rows, summaries.len(), path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_handle_quotes_and_commas() {
        assert_eq!(csv_fields(r#"a, "b,c" ,"say ""hi""""#).unwrap(), ["a", "b,c", r#"say "hi""#]);
        assert!(csv_fields(r#"a,"b"#).is_err());
    }

    #[test]
    fn shards_come_from_the_flag_and_bad_ones_are_refused() {
        assert_eq!(shard_of(Some("2/3")).unwrap(), (2, 3));
        for bad in ["3/3", "1", "a/b", "0/0", "-1/2"] {
            assert!(shard_of(Some(bad)).is_err(), "{bad}");
        }
    }
}
