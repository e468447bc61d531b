//! Results: the records each phase collects, the per-phase JSON files, and the report merged
//! from them (`target/bench-results/compare-<mode>.{json,md,png}`) with the targets as met / not
//! met.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::env::{self, Env, Facts, MIB};

/// One measured thing: every repetition's time, and facts about it.
#[derive(Debug, Clone)]
pub struct Rec {
    pub comparison: String,
    pub case: String,
    /// A stable key (`ours-hash`, `cinder-pipe`, ...).
    pub method: String,
    pub label: String,
    pub ours: bool,
    pub rbd_cache: String,
    /// Logical bytes per run (0 when not about bytes).
    pub data_bytes: u64,
    /// Operations per run (clones), 0 when not counted.
    pub ops: u64,
    pub runs: Vec<f64>,
    /// Client CPU seconds per run (this process or the subprocess tree), when measured.
    pub cpu: Vec<f64>,
    /// OSD CPU seconds per run (all clusters involved), when measured.
    pub osd_cpu: Vec<f64>,
    pub peak_rss_kib: Option<u64>,
    pub extra: Value,
}

impl Rec {
    pub fn push(&mut self, secs: f64, rss: Option<u64>) {
        self.runs.push(secs);
        if let Some(r) = rss {
            self.peak_rss_kib = Some(self.peak_rss_kib.unwrap_or(0).max(r));
        }
    }

    /// Records the client and OSD CPU seconds of the run just pushed.
    pub fn cpu(&mut self, client: f64, osd: f64) {
        self.cpu.push(client);
        self.osd_cpu.push(osd);
    }

    pub fn to_json(&self, f: &Facts) -> Value {
        let m = env::median(&self.runs);
        json!({
            "comparison": self.comparison, "case": self.case, "method": self.method, "label": self.label,
            "ours": self.ours, "rbd_cache": self.rbd_cache, "data_bytes": self.data_bytes, "ops": self.ops,
            "median_s": m, "runs_s": self.runs,
            "mib_per_s": if self.data_bytes > 0 { Some(self.data_bytes as f64 / MIB as f64 / m) } else { None },
            "ops_per_s": if self.ops > 0 { Some(self.ops as f64 / m) } else { None },
            "peak_rss_kib": self.peak_rss_kib, "extra": self.extra,
            "cpu_s": if self.cpu.is_empty() { None } else { Some(env::median(&self.cpu)) },
            "osd_cpu_s": if self.osd_cpu.is_empty() { None } else { Some(env::median(&self.osd_cpu)) },
            "ceph_version": f.ceph_version, "objectstore": f.objectstore, "osds": f.osds, "cores": f.cores,
            "mode": f.mode, "injected_delay_max_s": f.delay_max_s, "write_rtt_ms": f.write_rtt_ms,
        })
    }
}

/// What one phase collected.
pub struct PhaseOut {
    pub phase: String,
    pub recs: Vec<Rec>,
    pub notes: Vec<String>,
}

impl PhaseOut {
    pub fn new(phase: &str) -> PhaseOut {
        PhaseOut { phase: phase.to_string(), recs: Vec::new(), notes: Vec::new() }
    }

    /// The record for (comparison, case, method, rbd_cache), created on first use.
    pub fn rec(&mut self, comparison: &str, case: &str, method: &str, label: &str, cache: &str, data: u64) -> &mut Rec {
        let i =
            match self.recs.iter().position(|r| {
                r.comparison == comparison && r.case == case && r.method == method && r.rbd_cache == cache
            }) {
                Some(i) => i,
                None => {
                    self.recs.push(Rec {
                        comparison: comparison.into(),
                        case: case.into(),
                        method: method.into(),
                        label: label.into(),
                        ours: false,
                        rbd_cache: cache.into(),
                        data_bytes: data,
                        ops: 0,
                        runs: Vec::new(),
                        cpu: Vec::new(),
                        osd_cpu: Vec::new(),
                        peak_rss_kib: None,
                        extra: Value::Null,
                    });
                    self.recs.len() - 1
                }
            };
        &mut self.recs[i]
    }

    pub fn note(&mut self, s: String) {
        self.notes.push(s);
    }

    /// Writes `compare-<mode>-<phase>.json`.
    pub fn write(&self, env: &Env, seconds: f64, load_before: &str) -> PathBuf {
        let doc = json!({
            "phase": self.phase, "facts": env.facts.to_json(), "quick": env.quick, "repeat": env.repeat,
            "load_before": load_before, "load_after": env::loadavg(), "seconds": seconds,
            "notes": self.notes, "results": self.recs.iter().map(|r| r.to_json(&env.facts)).collect::<Vec<_>>(),
        });
        let p = env.out_dir.join(format!("compare-{}-{}.json", env.facts.mode, self.phase));
        std::fs::create_dir_all(&env.out_dir).expect("create target/bench-results");
        std::fs::write(&p, serde_json::to_string_pretty(&doc).unwrap_or_default()).expect("write phase JSON");
        p
    }
}

pub const PHASES: [&str; 6] = ["upload", "backup", "clones", "python", "memory", "scaling"];

// --- merged report ------------------------------------------------------------------------------

struct Doc {
    phases: Vec<Value>,
    results: Vec<Value>,
}

impl Doc {
    fn get(&self, comparison: &str, case: &str, method: &str, cache: Option<&str>) -> Option<&Value> {
        self.results.iter().find(|r| {
            r["comparison"] == comparison
                && r["case"] == case
                && r["method"] == method
                && cache.map(|c| r["rbd_cache"] == c).unwrap_or(true)
        })
    }

    fn median(&self, comparison: &str, case: &str, method: &str, cache: Option<&str>) -> Option<f64> {
        self.get(comparison, case, method, cache).and_then(|r| r["median_s"].as_f64())
    }
}

/// A target line: what, measured, met (None: no data).
struct Target {
    what: String,
    measured: String,
    met: Option<bool>,
}

fn ratio_target(what: String, other: Option<f64>, ours: Option<f64>, min: f64, unit: &str) -> Target {
    match (other, ours) {
        (Some(o), Some(u)) if u > 0.0 => {
            let r = o / u;
            Target { what, measured: format!("{r:.2}{unit} ({o:.2} s vs {u:.2} s)"), met: Some(r >= min) }
        }
        _ => Target { what, measured: "no data".into(), met: None },
    }
}

fn targets(d: &Doc) -> Vec<Target> {
    let mut t = Vec::new();
    for ds in ["random", "halfzero"] {
        t.push(ratio_target(
            format!("upload {ds}, hashing on ≥ 5× glance_store's way"),
            d.median("upload", ds, "glance-store-py", Some("on")),
            d.median("upload", ds, "ours-hash", Some("on")),
            5.0,
            "×",
        ));
    }
    for ds in ["random", "halfzero"] {
        t.push(ratio_target(
            format!("upload {ds}, hashing off ≥ 1.2× `rbd import`"),
            d.median("upload", ds, "rbd-import", Some("on")),
            d.median("upload", ds, "ours-nohash", Some("on")),
            1.2,
            "×",
        ));
    }
    t.push(ratio_target(
        "upload random, hashing off ≥ 0.85 of the `rbd bench` ceiling".into(),
        d.median("upload", "ceiling", "rbd-bench", Some("on")),
        d.median("upload", "random", "ours-nohash", Some("on")),
        0.85,
        " of the ceiling",
    ));
    t.push(ratio_target(
        "incremental backup ≥ 3× the Cinder pipe".into(),
        d.median("backup", "incremental", "cinder-pipe", None),
        d.median("backup", "incremental", "recipe", None),
        3.0,
        "×",
    ));
    // Proportionality: the time grows with the changed bytes (the 1 → 10 % increase is 9/99 of
    // the 1 → 100 % one, within a factor 2) on top of a fixed part (t(1 %)) of at most 25 % of
    // t(100 %).
    let s: Vec<Option<f64>> =
        [1, 10, 100].iter().map(|p| d.median("scaling", &format!("backup {p}%"), "recipe", None)).collect();
    t.push(match (s[0], s[1], s[2]) {
        (Some(a), Some(b), Some(c)) if c > a => {
            let marginal = (b - a) / (c - a) / (9.0 / 99.0);
            Target {
                what: "incremental backup time ∝ changed bytes (marginal cost 1→10 % within 2× of 9/99 of 1→100 %; \
                       fixed part t(1 %) ≤ 25 % of t(100 %))"
                    .into(),
                measured: format!(
                    "1 %: {a:.2} s, 10 %: {b:.2} s, 100 %: {c:.2} s; t ≈ {a:.2} s + {:.2} s × share changed; marginal \
                     {marginal:.2}× proportional; fixed part {:.0} % of t(100 %)",
                    (c - a) / 0.99,
                    a / c * 100.0
                ),
                met: Some((0.5..=2.0).contains(&marginal) && a / c <= 0.25),
            }
        }
        _ => Target { what: "incremental backup time ∝ changed bytes".into(), measured: "no data".into(), met: None },
    });
    t.push(ratio_target(
        "clones ≥ 5× OpenStack's connect-per-operation way (Nova driver.clone)".into(),
        d.median("clones", "boot from image", "py-driver-clone", None),
        d.median("clones", "boot from image", "nova-recipe", None),
        5.0,
        "×",
    ));
    let py_cases: Vec<String> = d
        .results
        .iter()
        .filter(|r| r["comparison"] == "python" && r["method"] == "python")
        .filter_map(|r| r["case"].as_str().map(String::from))
        .collect();
    for case in py_cases {
        let (py, rs) = (d.median("python", &case, "python", None), d.median("python", &case, "rust", None));
        t.push(match (py, rs) {
            (Some(p), Some(r)) if r > 0.0 => Target {
                what: format!("Python ≤ 1.10× Rust: {case}"),
                measured: format!("{:.3}× ({p:.2} s vs {r:.2} s)", p / r),
                met: Some(p / r <= 1.10),
            },
            _ => Target { what: format!("Python ≤ 1.10× Rust: {case}"), measured: "no data".into(), met: None },
        });
    }
    for case in ["upload", "backup"] {
        let r = d.get("memory", case, "ours", None);
        let rss = r.and_then(|r| r["peak_rss_kib"].as_u64());
        let size = r.and_then(|r| r["data_bytes"].as_u64()).unwrap_or(0);
        t.push(match rss {
            Some(k) => Target {
                what: format!("peak RSS ≤ 128 MiB: {case} of {} MiB", size / MIB),
                measured: format!("{:.1} MiB", k as f64 / 1024.0),
                met: Some(k <= 128 * 1024),
            },
            None => Target { what: format!("peak RSS ≤ 128 MiB: {case}"), measured: "no data".into(), met: None },
        });
    }
    t
}

fn by<'a>(d: &'a Doc, c: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    d.results.iter().filter(move |r| r["comparison"] == c)
}

fn f2(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "–".into())
}

fn rss(r: &Value) -> String {
    r["peak_rss_kib"].as_u64().map(|k| format!("{:.0}", k as f64 / 1024.0)).unwrap_or_else(|| "–".into())
}

fn spread(r: &Value) -> String {
    let runs: Vec<f64> =
        r["runs_s"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
    if runs.len() < 2 {
        return String::new();
    }
    let lo = runs.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = runs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!(" ({lo:.2}–{hi:.2})")
}

/// `source reads (MiB) / destination writes (MiB)` from the OSD counters of the last run.
fn ops(r: &Value) -> String {
    let o = &r["extra"]["osd_ops"];
    match (o["source"]["reads"].as_u64(), o["destination"]["writes"].as_u64()) {
        (Some(sr), Some(dw)) => format!(
            "{sr} ({:.0}) / {dw} ({:.0})",
            o["source"]["read_bytes"].as_u64().unwrap_or(0) as f64 / MIB as f64,
            o["destination"]["write_bytes"].as_u64().unwrap_or(0) as f64 / MIB as f64
        ),
        _ => "–".into(),
    }
}

/// `client / OSD` CPU seconds.
fn cpu(r: &Value) -> String {
    match (r["cpu_s"].as_f64(), r["osd_cpu_s"].as_f64()) {
        (Some(c), Some(o)) => format!("{c:.2} / {o:.2}"),
        _ => "–".into(),
    }
}

fn esc(s: &str) -> String {
    s.replace('|', "\\|")
}

fn markdown(d: &Doc, facts: &Value, quick: bool, repeat: u64, tg: &[Target]) -> String {
    let mut md = String::new();
    let mode = facts["mode"].as_str().unwrap_or("?");
    let _ = writeln!(
        md,
        "### Results: {mode} mode{}\n",
        if quick { " (quick smoke run: tiny sizes, targets not enforced)" } else { "" }
    );
    let loads: Vec<String> = d
        .phases
        .iter()
        .map(|p| {
            format!(
                "{} {}→{}",
                p["phase"].as_str().unwrap_or("?"),
                p["load_before"].as_str().unwrap_or("?"),
                p["load_after"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "{} · objectstore `{}` (memstore_page_set {}) · {} OSD · {} cores · injected delay `ms_inject_delay_max` {} s on `{}` (4 KiB sync write: {:.2} ms source, {:.2} ms destination; connect + ioctx + shutdown {:.1} ms) · {} · python-rbd {} · median of {repeat} run(s), (min–max) when more · load average (1/5/15 min) before→after each phase: {}\n",
        facts["ceph_version"].as_str().unwrap_or("?"),
        facts["objectstore"].as_str().unwrap_or("?"),
        facts["memstore_page_set"].as_str().unwrap_or("?"),
        facts["osds"],
        facts["cores"],
        facts["injected_delay_max_s"],
        facts["delay_on"].as_str().unwrap_or(""),
        facts["write_rtt_ms"].as_f64().unwrap_or(f64::NAN),
        facts["write_rtt_ms_dst"].as_f64().unwrap_or(f64::NAN),
        facts["connect_ms"].as_f64().unwrap_or(f64::NAN),
        facts["topology"].as_str().unwrap_or("?"),
        facts["python_rbd"].as_str().unwrap_or("?"),
        loads.join(", "),
    );

    // 1. Upload
    if by(d, "upload").next().is_some() {
        let size = by(d, "upload").next().and_then(|r| r["data_bytes"].as_u64()).unwrap_or(0);
        let _ = writeln!(md, "**1. Image upload, {} MiB** (time in s, MiB/s of image bytes)\n", size / MIB);
        let _ = writeln!(
            md,
            "| data | rbd_cache | method | time (s) | MiB/s | vs glance_store's way | CPU s client / OSD | peak RSS (MiB) |"
        );
        let _ = writeln!(md, "|---|---|---|---:|---:|---:|---:|---:|");
        for r in by(d, "upload") {
            let case = r["case"].as_str().unwrap_or("");
            let cache = r["rbd_cache"].as_str().unwrap_or("");
            let m = r["median_s"].as_f64();
            let gs = d.median("upload", case, "glance-store-py", Some(cache));
            let vs = match (gs, m) {
                (Some(g), Some(m)) if case != "ceiling" => format!("{:.2}×", g / m),
                _ => "–".into(),
            };
            let _ = writeln!(
                md,
                "| {case} | {cache} | {}{} | {}{} | {:.0} | {vs} | {} | {} |",
                if r["ours"].as_bool() == Some(true) { "**ours** " } else { "" },
                esc(r["label"].as_str().unwrap_or("")),
                f2(m),
                spread(r),
                r["mib_per_s"].as_f64().unwrap_or(0.0),
                cpu(r),
                rss(r)
            );
        }
        md.push('\n');
    }
    // 2. Backup
    if by(d, "backup").next().is_some() {
        let _ = writeln!(md, "**2. Backup to the second cluster** (time in s)\n");
        let _ = writeln!(
            md,
            "| backup | method | time (s) | vs Cinder pipe | bytes moved (MiB) | CPU s client / OSDs | OSD ops: source reads (MiB) / destination writes (MiB) | peak RSS (MiB) |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
        for r in by(d, "backup") {
            let case = r["case"].as_str().unwrap_or("");
            let m = r["median_s"].as_f64();
            let pipe = d.median("backup", case, "cinder-pipe", None);
            let moved = r["extra"]["bytes_moved"]
                .as_u64()
                .map(|b| format!("{:.1}", b as f64 / MIB as f64))
                .unwrap_or_else(|| "–".into());
            let _ = writeln!(
                md,
                "| {case} | {}{} | {}{} | {} | {moved} | {} | {} | {} |",
                if r["ours"].as_bool() == Some(true) { "**ours** " } else { "" },
                esc(r["label"].as_str().unwrap_or("")),
                f2(m),
                spread(r),
                match (pipe, m) {
                    (Some(p), Some(m)) => format!("{:.2}×", p / m),
                    _ => "–".into(),
                },
                cpu(r),
                ops(r),
                rss(r)
            );
        }
        md.push('\n');
    }
    // 3. Clones
    if by(d, "clones").next().is_some() {
        let _ = writeln!(md, "**3. Boot-from-image clones**\n");
        let _ = writeln!(md, "| method | time (s) | clones/s | vs Nova's driver.clone |");
        let _ = writeln!(md, "|---|---:|---:|---:|");
        let base = d.median("clones", "boot from image", "py-driver-clone", None);
        for r in by(d, "clones") {
            let m = r["median_s"].as_f64();
            let _ = writeln!(
                md,
                "| {}{} ({} clones) | {}{} | {:.1} | {} |",
                if r["ours"].as_bool() == Some(true) { "**ours** " } else { "" },
                esc(r["label"].as_str().unwrap_or("")),
                r["ops"],
                f2(m),
                spread(r),
                r["ops_per_s"].as_f64().unwrap_or(0.0),
                match (base, m) {
                    (Some(b), Some(m)) => format!("{:.2}×", b / m),
                    _ => "–".into(),
                }
            );
        }
        md.push('\n');
    }
    // 4. Python
    if by(d, "python").next().is_some() {
        let _ = writeln!(md, "**4. Python (rbd_core package) vs Rust, same calls**\n");
        let _ = writeln!(md, "| operation | Rust (s) | Python (s) | Python / Rust |");
        let _ = writeln!(md, "|---|---:|---:|---:|");
        for r in by(d, "python").filter(|r| r["method"] == "rust") {
            let case = r["case"].as_str().unwrap_or("");
            let rs = r["median_s"].as_f64();
            let py = d.get("python", case, "python", None);
            let pm = py.and_then(|p| p["median_s"].as_f64());
            let _ = writeln!(
                md,
                "| {} | {}{} | {}{} | {} |",
                esc(case),
                f2(rs),
                spread(r),
                f2(pm),
                py.map(spread).unwrap_or_default(),
                match (pm, rs) {
                    (Some(p), Some(r)) => format!("{:.3}×", p / r),
                    _ => "–".into(),
                }
            );
        }
        md.push('\n');
    }
    // 5. Memory
    if by(d, "memory").next().is_some() {
        let _ = writeln!(md, "**5. Peak RSS of one operation in its own process**\n");
        let _ = writeln!(md, "| operation | data | time (s) | peak RSS (MiB) |");
        let _ = writeln!(md, "|---|---|---:|---:|");
        for r in by(d, "memory") {
            let _ = writeln!(
                md,
                "| {}: {} | {} | {} | {} |",
                esc(r["case"].as_str().unwrap_or("")),
                esc(r["label"].as_str().unwrap_or("")),
                r["extra"]["data_set"].as_str().unwrap_or("–"),
                f2(r["median_s"].as_f64()),
                rss(r)
            );
        }
        md.push('\n');
    }
    // 6. Scaling
    if by(d, "scaling").next().is_some() {
        let _ = writeln!(md, "**6. Scaling**\n");
        let _ = writeln!(md, "| case | method | time (s) | MiB/s of changed/uploaded bytes | peak RSS (MiB) |");
        let _ = writeln!(md, "|---|---|---:|---:|---:|");
        for r in by(d, "scaling") {
            let _ = writeln!(
                md,
                "| {} | {}{} | {}{} | {:.0} | {} |",
                esc(r["case"].as_str().unwrap_or("")),
                if r["ours"].as_bool() == Some(true) { "**ours** " } else { "" },
                esc(r["label"].as_str().unwrap_or("")),
                f2(r["median_s"].as_f64()),
                spread(r),
                r["mib_per_s"].as_f64().unwrap_or(0.0),
                rss(r)
            );
        }
        md.push('\n');
    }
    // Targets
    let _ = writeln!(
        md,
        "**Targets** (ratios within this run{})\n",
        if quick { "; quick run: indicative only" } else { "" }
    );
    let _ = writeln!(md, "| target | measured | met |");
    let _ = writeln!(md, "|---|---|---|");
    for t in tg {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            esc(&t.what),
            esc(&t.measured),
            match t.met {
                Some(true) => "met",
                Some(false) => "**not met**",
                None => "–",
            }
        );
    }
    md.push('\n');
    let notes: Vec<&str> =
        d.phases.iter().flat_map(|p| p["notes"].as_array().into_iter().flatten().filter_map(Value::as_str)).collect();
    if !notes.is_empty() {
        let _ = writeln!(md, "Notes:\n");
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md
}

/// Merges `compare-<mode>-<phase>.json` into `compare-<mode>.{json,md,png}`, prints the
/// Markdown and the targets, returns the Markdown path.
pub fn write_report(out_dir: &Path, mode: &str, want_quick: bool) -> Option<PathBuf> {
    let mut phases = Vec::new();
    let mut results = Vec::new();
    let mut facts = Value::Null;
    let mut quick = false;
    let mut repeat = 0;
    for ph in PHASES {
        let p = out_dir.join(format!("compare-{mode}-{ph}.json"));
        let Ok(text) = std::fs::read_to_string(&p) else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
        if v["quick"].as_bool().unwrap_or(false) != want_quick {
            eprintln!("report: ignoring {} (a {} run)", p.display(), if want_quick { "full" } else { "quick" });
            continue;
        }
        if facts.is_null() {
            facts = v["facts"].clone();
        }
        quick |= v["quick"].as_bool().unwrap_or(false);
        repeat = repeat.max(v["repeat"].as_u64().unwrap_or(1));
        results.extend(v["results"].as_array().cloned().unwrap_or_default());
        phases.push(json!({"phase": ph, "load_before": v["load_before"], "load_after": v["load_after"],
            "seconds": v["seconds"], "notes": v["notes"]}));
    }
    if phases.is_empty() {
        eprintln!("no phase results for mode {mode} in {}", out_dir.display());
        return None;
    }
    let doc = Doc { phases, results };
    let tg = targets(&doc);
    let md = markdown(&doc, &facts, quick, repeat, &tg);
    let merged = json!({
        "benchmark": "compare", "facts": facts, "quick": quick, "repeat": repeat, "phases": doc.phases,
        "results": doc.results,
        "targets": tg.iter().map(|t| json!({"target": t.what, "measured": t.measured, "met": t.met})).collect::<Vec<_>>(),
    });
    let base = out_dir.join(format!("compare-{mode}"));
    std::fs::write(base.with_extension("json"), serde_json::to_string_pretty(&merged).unwrap_or_default())
        .expect("write report JSON");
    let png = base.with_extension("png");
    let md = match crate::chart::draw(&doc.results, &png, mode) {
        Ok(()) => format!("{md}\n![benchmark chart](compare-{mode}.png)\n"),
        Err(e) => {
            eprintln!("chart skipped: {e}");
            md
        }
    };
    let mdp = base.with_extension("md");
    std::fs::write(&mdp, &md).expect("write report Markdown");
    println!("{md}");
    println!("Targets ({mode}{}):", if quick { ", quick run: not enforced" } else { "" });
    for t in &tg {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "no data",
        };
        println!("  [{verdict:^7}] {} — {}", t.what, t.measured);
    }
    println!("Wrote {} (.json, .png)", mdp.display());
    Some(mdp)
}
