//! Fault suite (issue #10), part 1: a crash at every step boundary of every multi-step recipe.
//!
//! For each recipe the step list is read from the recipe's own source (every `s.step("..")` /
//! `s.check("..")` of its saga, plus `commit`) and cross-checked with its `*_STEPS` constant
//! where one exists, so a step added later is swept too. For each step, in a child process
//! (`examples/recipe_runner.rs`) armed with `RBD_CORE_FAILPOINTS=<recipe>.<step>=kill`:
//!
//! 1. inventory everything the test's names own (images, user and non-user snapshots,
//!    protection, parents, image metadata such as provenance markers and slot heartbeats,
//!    managed/advisory locks, trash entries, groups and group snapshots with their metadata,
//!    pool-metadata journal entries, backup metadata objects);
//! 2. run the recipe and SIGKILL it at the boundary (no undo runs);
//! 3. `reconcile` (min_age 0, scoped to the test's token) and apply it;
//! 4. the owning service's normal error path where OpenStack has one (a failed create leaves
//!    its target in an error state, which the service deletes with the delete recipe), then
//!    run the recipe again, to completion;
//! 5. inventory again: the change must equal what a clean run (no kill) changes, name for
//!    name (with the per-run id normalised). Anything else is an orphan (or a missing result),
//!    and so is anything a second reconcile dry run still finds;
//! 6. verify the data by sha256 against the source.
//!
//! The flatten slot (the cluster-wide throttle, which is not a saga) is crashed at its three
//! boundaries while the slot is held: right after acquiring it, at the first flatten progress
//! report, and just before releasing it (`RBD_RUNNER_KILL_AT`).
//!
//! Figure per recipe: (recipe, step) pairs killed, orphans (must be 0), data mismatches (must
//! be 0). Every name contains a random token; reconciles consider only such names.
mod common;
use common::RunnerOutcome as Outcome;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::{pattern, purge_image, record_figure};
use rbd_core::recipes::backup::{self, VolumeRef};
use rbd_core::recipes::cinder::{self, VolumeFromVolume};
use rbd_core::recipes::glance::{GlanceStore, UPLOAD_STEPS};
use rbd_core::recipes::groups::{self, ConsistencyGroups, GroupSpec};
use rbd_core::recipes::location::Location;
use rbd_core::recipes::nova;
use rbd_core::recipes::reconcile::{Action, Reconcile, ReconcileReport};
use rbd_core::recipes::throttle::Throttle;
use rbd_core::{CloneFormat, Cluster, Image, ImageOptions, Pool, Progress, SnapNamespace};
use serde_json::json;
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
const SUITE: &str = "fault_crash";
/// Lease of the flatten-slot sweep (heartbeat a third of it), so a dead holder is stale fast.
const SLOT_LEASE_MS: u64 = 1500;

// ---------------------------------------------------------------------------------------------
// Step lists, derived from the recipes' source.

const SRC_GLANCE: &str = include_str!("../rbd-core/src/recipes/glance.rs");
const SRC_NOVA: &str = include_str!("../rbd-core/src/recipes/nova.rs");
const SRC_CINDER_CREATE: &str = include_str!("../rbd-core/src/recipes/cinder/create.rs");
const SRC_CINDER_SNAPSHOT: &str = include_str!("../rbd-core/src/recipes/cinder/snapshot.rs");
const SRC_CINDER_DELETE: &str = include_str!("../rbd-core/src/recipes/cinder/delete.rs");
const SRC_BACKUP_CREATE: &str = include_str!("../rbd-core/src/recipes/backup/create.rs");
const SRC_BACKUP_RESTORE: &str = include_str!("../rbd-core/src/recipes/backup/restore.rs");
const SRC_GROUPS: &str = include_str!("../rbd-core/src/recipes/groups.rs");

/// The step names of the saga that follows `anchor` in `src` (up to the next `Saga::new`):
/// every `s.step("name"` and `s.check("name"`, in source order, then `commit`.
fn steps_in(src: &str, anchor: &str) -> Vec<String> {
    let start = src.find(anchor).unwrap_or_else(|| panic!("{anchor:?} not found in the recipe source"));
    let rest = &src[start..];
    let saga = rest.find("Saga::new(").unwrap_or_else(|| panic!("no saga after {anchor:?}"));
    let end = rest[saga + 1..].find("Saga::new(").map_or(rest.len(), |e| saga + 1 + e);
    let body = &rest[saga..end];
    let mut out: Vec<String> = Vec::new();
    for pat in ["s.step(", "s.check("] {
        let mut from = 0;
        while let Some(i) = body[from..].find(pat) {
            let at = from + i + pat.len();
            let tail = body[at..].trim_start();
            if let Some(t) = tail.strip_prefix('"') {
                if let Some(q) = t.find('"') {
                    let pos = body.len() - tail.len();
                    out.push(format!("{pos:08}{}", &t[..q]));
                }
            }
            from = at;
        }
    }
    out.sort();
    let mut names: Vec<String> = Vec::new();
    for n in out {
        let n = n[8..].to_string();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names.push("commit".into());
    names
}

fn with_commit(consts: &[&str]) -> Vec<String> {
    consts.iter().map(|s| s.to_string()).chain(["commit".to_string()]).collect()
}

fn assert_same_steps(derived: &[String], consts: &[&str], what: &str) {
    let mut a = derived.to_vec();
    let mut b = with_commit(consts);
    a.sort();
    b.sort();
    assert_eq!(a, b, "{what}: the saga's steps and its STEPS constant disagree");
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn pool(c: &Cluster, name: &str) -> Pool {
    Pool::open(c, name).unwrap()
}

/// Runs the runner with `args` and extra environment `env` (e.g. the failpoint).
fn run_recipe(args: &[String], env: Option<(String, String)>) -> Outcome {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    common::run_runner(&args, &env)
}

fn sha_of(img: &Image, len: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(img.read_vec(0, len as usize).unwrap());
    h.finalize().to_vec()
}

fn sha_bytes(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

fn s(v: &str) -> String {
    v.to_string()
}

// ---------------------------------------------------------------------------------------------
// Inventory: everything a test's names own, as sorted lines (a multiset).

fn inventory(pools: &[&Pool], tok: &str) -> Vec<String> {
    let mut v = Vec::new();
    for p in pools {
        let pn = p.name().to_string();
        for n in p.image_names().unwrap().into_iter().filter(|n| n.contains(tok)) {
            v.push(format!("img {pn}/{n}"));
            let Ok(img) = Image::open_read_only(p, &n) else { continue };
            for sn in img.snapshots().unwrap_or_default() {
                if sn.namespace == SnapNamespace::User {
                    v.push(format!("snap {pn}/{n}@{} protected={:?}", sn.name, sn.protected));
                } else {
                    v.push(format!("snap {pn}/{n} namespace={:?}", sn.namespace));
                }
            }
            if let Ok(Some(par)) = img.parent() {
                v.push(format!("parent {pn}/{n} <- {}/{}@{}", par.pool, par.image, par.snap));
            }
            for (k, _) in img.metadata_list().unwrap_or_default() {
                v.push(format!("meta {pn}/{n} {k}"));
            }
            if let Ok(l) = img.list_lockers() {
                if !l.lockers.is_empty() {
                    v.push(format!("locked {pn}/{n}"));
                }
            }
        }
        for t in p.trash_list().unwrap_or_default().into_iter().filter(|t| t.name.contains(tok)) {
            v.push(format!("trash {pn}/{}", t.name));
        }
        for g in p.group_list().unwrap_or_default().into_iter().filter(|g| g.contains(tok)) {
            v.push(format!("group {pn}/{g}"));
            for gs in rbd_core::Group::new(p, &g).snaps().unwrap_or_default() {
                v.push(format!("gsnap {pn}/{g}@{} {:?}", gs.name, gs.state));
            }
            let id = g.strip_prefix(groups::GROUP_PREFIX).unwrap_or(&g);
            if let Ok(b) = p.object_read_full(&format!("{}{id}", groups::META_PREFIX)) {
                let m: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
                for k in m
                    .get("snapshots")
                    .and_then(|x| x.as_object())
                    .map(|o| o.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    v.push(format!("gmeta {pn}/{id} snapshot {k}"));
                }
            }
        }
        for (k, _) in p.pool_metadata_list().unwrap_or_default().into_iter().filter(|(k, _)| k.contains(tok)) {
            v.push(format!("pmeta {pn} {k}"));
        }
        if pn == "backups" {
            for o in p.object_list().unwrap_or_default().into_iter().filter(|o| o.contains(tok)) {
                v.push(format!("obj {pn}/{o}"));
            }
        }
    }
    v.sort();
    v
}

/// Replaces the per-run id `it` and the time in backup snapshot names, so a killed run's
/// result can be compared with the clean reference run's.
fn normalise(line: &str, it: &str) -> String {
    let mut l = line.replace(it, "-kID");
    while let Some(i) = l.find(".snap.") {
        let head = &l[..i];
        let tail = &l[i + 6..];
        let keep = tail.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(tail.len());
        l = format!("{head}.SNAP-T{}", &tail[keep..]);
    }
    l
}

/// (added, removed) between two inventories, normalised and sorted.
fn delta(before: &[String], after: &[String], it: &str) -> (Vec<String>, Vec<String>) {
    let count = |v: &[String]| {
        let mut m: BTreeMap<String, i64> = BTreeMap::new();
        for x in v {
            *m.entry(normalise(x, it)).or_default() += 1;
        }
        m
    };
    let (b, a) = (count(before), count(after));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for k in keys {
        let d = a.get(k).copied().unwrap_or(0) - b.get(k).copied().unwrap_or(0);
        for _ in 0..d.max(0) {
            added.push(k.clone());
        }
        for _ in 0..(-d).max(0) {
            removed.push(k.clone());
        }
    }
    (added, removed)
}

/// Lines in one multiset but not the other.
fn sym_diff(a: &[String], b: &[String]) -> Vec<String> {
    let mut m: BTreeMap<&String, i64> = BTreeMap::new();
    for x in a {
        *m.entry(x).or_default() += 1;
    }
    for x in b {
        *m.entry(x).or_default() -= 1;
    }
    m.into_iter().filter(|(_, n)| *n != 0).map(|(k, n)| format!("{} {k}", if n > 0 { "+" } else { "-" })).collect()
}

// ---------------------------------------------------------------------------------------------
// The sweep.

/// Runner arguments for one run id.
type ArgsFn<'a> = Box<dyn Fn(&str) -> Vec<String> + 'a>;

/// One way to run a recipe (a path through its saga).
struct Scenario<'a> {
    name: &'static str,
    /// Makes what one run needs (per run id `it`).
    setup: Box<dyn Fn(&str) + 'a>,
    /// Runner arguments.
    args: ArgsFn<'a>,
    /// After a crash and reconcile: the service's own error path. Returns false when the
    /// recipe's work is already complete and must not run again.
    recover: Box<dyn Fn(&str) -> bool + 'a>,
    /// Data check after the re-run.
    verify: Box<dyn Fn(&str) -> bool + 'a>,
    /// Removes what the run made.
    teardown: Box<dyn Fn(&str) + 'a>,
}

fn no_recover() -> Box<dyn Fn(&str) -> bool> {
    Box::new(|_| true)
}

struct Sweep<'a> {
    recipe: &'static str,
    tok: String,
    pools: Vec<&'a Pool>,
    backup_target: Option<&'a Pool>,
    /// For the throttle: the env var naming the kill point, and the slot lease.
    kill_env: Option<&'static str>,
    slot_lease: Option<Duration>,
}

#[derive(Default)]
struct Stats {
    tried: usize,
    orphans: usize,
    mismatches: usize,
    rerun_failures: usize,
    stale_locks: usize,
    reconciled: usize,
    service_cleanups: usize,
    rows: Vec<serde_json::Value>,
    problems: Vec<String>,
}

static RUN: AtomicUsize = AtomicUsize::new(0);

impl Sweep<'_> {
    fn reconcile(&self, dry: bool) -> ReconcileReport {
        let t = self.tok.clone();
        let mut r = Reconcile::new(&self.pools);
        r.backup_target(self.backup_target).min_age(Duration::ZERO).dry_run(dry).filter(move |n| n.contains(&t));
        if let Some(l) = self.slot_lease {
            r.slot_lease(l);
        }
        r.run().expect("reconcile")
    }

    fn kill_env(&self, step: &str) -> (String, String) {
        match self.kill_env {
            Some(k) => (k.to_string(), step.to_string()),
            None => ("RBD_CORE_FAILPOINTS".into(), format!("{}.{step}=kill", self.recipe)),
        }
    }

    /// Runs every step of `steps` through the scenarios in order: each step is killed in the
    /// first scenario whose path reaches it. Panics (after recording the figure) on orphans,
    /// mismatches or a step no scenario reaches.
    fn run(&self, steps: &[String], scenarios: &[Scenario<'_>]) {
        let t0 = Instant::now();
        let mut st = Stats::default();
        let mut left: Vec<String> = steps.to_vec();
        for sc in scenarios {
            if left.is_empty() {
                break;
            }
            // The clean reference run of this scenario.
            let it = format!("-r{:04}x", RUN.fetch_add(1, Ordering::SeqCst));
            (sc.setup)(&it);
            let before = inventory(&self.pools_all(), &self.tok);
            let out = run_recipe(&(sc.args)(&it), None);
            assert_eq!(out, Outcome::Ok, "{} ({}): the clean reference run failed", self.recipe, sc.name);
            let after = inventory(&self.pools_all(), &self.tok);
            let reference = delta(&before, &after, &it);
            assert!((sc.verify)(&it), "{} ({}): the clean run's data does not verify", self.recipe, sc.name);
            (sc.teardown)(&it);

            let mut still = Vec::new();
            for step in left.drain(..) {
                let it = format!("-k{:04}x", RUN.fetch_add(1, Ordering::SeqCst));
                (sc.setup)(&it);
                let before = inventory(&self.pools_all(), &self.tok);
                let out = run_recipe(&(sc.args)(&it), Some(self.kill_env(&step)));
                match out {
                    Outcome::Killed => {}
                    Outcome::Ok => {
                        // Not on this scenario's path: try it in the next one.
                        (sc.teardown)(&it);
                        still.push(step);
                        continue;
                    }
                    Outcome::Err(e) => {
                        panic!("{}.{step} ({}): the run failed instead of dying: {e}", self.recipe, sc.name)
                    }
                }
                st.tried += 1;
                let crashed = inventory(&self.pools_all(), &self.tok);
                // Reconcile (a dead slot holder is stale only after the lease).
                let deadline = Instant::now() + Duration::from_secs(30);
                let applied = loop {
                    let r = self.reconcile(false);
                    if self.slot_lease.is_none() || !r.findings.is_empty() || Instant::now() > deadline {
                        break r;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                };
                for f in &applied.findings {
                    if f.action != Action::Removed {
                        st.problems.push(format!(
                            "{}.{step}: reconcile could not remove {}: {}",
                            self.recipe,
                            f.spec(),
                            f.action
                        ));
                    }
                }
                st.reconciled += applied.findings.len();
                let reconciled = inventory(&self.pools_all(), &self.tok);
                let rerun = (sc.recover)(&it);
                let after_recover = inventory(&self.pools_all(), &self.tok);
                if after_recover != reconciled {
                    st.service_cleanups += 1;
                }
                if rerun {
                    let out = run_recipe(&(sc.args)(&it), None);
                    if out != Outcome::Ok {
                        st.rerun_failures += 1;
                        st.problems.push(format!("{}.{step}: the re-run failed: {out:?}", self.recipe));
                    }
                }
                let after = inventory(&self.pools_all(), &self.tok);
                let got = delta(&before, &after, &it);
                let mut orphans = sym_diff(&got.0, &reference.0);
                orphans.extend(sym_diff(&got.1, &reference.1).into_iter().map(|l| format!("(removed) {l}")));
                // A dead (fenced) client's managed exclusive lock on an image it was changing
                // is not an artifact: librbd breaks it on the next lock request (the owner
                // has no watch). Counted apart.
                let (locks, mut orphans): (Vec<String>, Vec<String>) =
                    orphans.into_iter().partition(|l| l.starts_with("+ locked "));
                st.stale_locks += locks.len();
                let again = self.reconcile(true);
                orphans.extend(again.findings.iter().map(|f| format!("reconcile still finds {} {}", f.kind, f.spec())));
                let data_ok = (sc.verify)(&it);
                if !data_ok {
                    st.mismatches += 1;
                    st.problems.push(format!("{}.{step}: data mismatch", self.recipe));
                }
                if !orphans.is_empty() {
                    st.problems.push(format!("{}.{step}: orphans {orphans:?}", self.recipe));
                }
                st.orphans += orphans.len();
                st.rows.push(json!({
                    "scenario": sc.name, "step": step,
                    "left_by_crash": sym_diff(&delta(&before, &crashed, &it).0, &[]).len(),
                    "reconciled": applied.findings.iter().map(|f| format!("{} {}", f.kind, f.spec())).collect::<Vec<_>>(),
                    "service_cleanup": after_recover != reconciled,
                    "orphans": orphans, "stale_locks": locks, "data_ok": data_ok,
                }));
                (sc.teardown)(&it);
            }
            left = still;
        }
        let secs = t0.elapsed().as_secs_f64();
        let pass = st.orphans == 0
            && st.mismatches == 0
            && st.rerun_failures == 0
            && left.is_empty()
            && st.problems.is_empty();
        let figure = format!(
            "{} ({}, step) pairs killed; {} orphans; {} data mismatches; {} re-runs failed",
            st.tried, self.recipe, st.orphans, st.mismatches, st.rerun_failures
        );
        record_figure(
            SUITE,
            self.recipe,
            &figure,
            pass,
            json!({"recipe": self.recipe, "steps": steps, "pairs_killed": st.tried, "orphans": st.orphans,
                "data_mismatches": st.mismatches, "rerun_failures": st.rerun_failures,
                "reconcile_findings": st.reconciled, "stale_exclusive_locks_of_dead_clients": st.stale_locks, "service_cleanups": st.service_cleanups,
                "unreached_steps": left, "seconds": secs, "problems": st.problems, "runs": st.rows}),
        );
        assert!(left.is_empty(), "{}: steps no scenario reaches: {left:?}", self.recipe);
        assert!(st.problems.is_empty(), "{}: {:#?}", self.recipe, st.problems);
        assert!(pass);
    }

    fn pools_all(&self) -> Vec<&Pool> {
        let mut v = self.pools.clone();
        if let Some(b) = self.backup_target {
            v.push(b);
        }
        v
    }
}

/// Removes every image (children first), trash entry and journal entry whose name contains
/// `tok`, on drop.
struct Cleanup {
    pools: Vec<Pool>,
    tok: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.pools {
            for g in p.group_list().unwrap_or_default().into_iter().filter(|g| g.contains(&self.tok)) {
                let _ = p.group_remove(&g);
                let id = g.strip_prefix(groups::GROUP_PREFIX).unwrap_or(&g).to_string();
                let _ = p.object_remove(&format!("{}{id}", groups::META_PREFIX));
            }
        }
        for _round in 0..4 {
            for p in &self.pools {
                let mut ours: Vec<String> =
                    p.image_names().unwrap_or_default().into_iter().filter(|n| n.contains(&self.tok)).collect();
                ours.sort_by_key(|n| {
                    Image::open_read_only(p, n).ok().and_then(|i| i.parent().ok().flatten()).is_none()
                });
                for n in ours {
                    purge_image(p, &n);
                }
            }
        }
        for p in &self.pools {
            for t in p.trash_list().unwrap_or_default().into_iter().filter(|t| t.name.contains(&self.tok)) {
                if p.trash_restore(&t.id, &t.name).is_ok() {
                    purge_image(p, &t.name);
                }
            }
            for (k, _) in p.pool_metadata_list().unwrap_or_default() {
                if k.contains(&self.tok) {
                    let _ = p.pool_metadata_remove(&k);
                }
            }
            if p.name() == "backups" {
                for o in p.object_list().unwrap_or_default().into_iter().filter(|o| o.contains(&self.tok)) {
                    let _ = p.object_remove(&o);
                }
            }
        }
    }
}

/// Removes every image of `p` whose name contains `it` (children first).
fn purge_run(p: &Pool, it: &str) {
    for _ in 0..3 {
        let mut ours: Vec<String> = p.image_names().unwrap().into_iter().filter(|n| n.contains(it)).collect();
        ours.sort_by_key(|n| Image::open_read_only(p, n).ok().and_then(|i| i.parent().ok().flatten()).is_none());
        for n in ours {
            purge_image(p, &n);
        }
    }
}

fn write_pattern(p: &Pool, name: &str, seed: u64, len: u64) {
    Image::open(p, name).unwrap().write(0, &pattern(seed, len as usize)).unwrap();
}

fn glance_delete(c: &Cluster, images: &Pool, id: &str) {
    if images.image_exists(id).unwrap() {
        let loc = Location::new(&c.fsid().unwrap(), images.name(), id, "snap");
        GlanceStore::new(images).delete(&loc).unwrap_or_else(|e| panic!("glance delete of {id}: {e}"));
    }
}

// ---------------------------------------------------------------------------------------------
// The recipes.

#[test]
fn glance_upload_crash_at_every_step() {
    let c = live!();
    let images = pool(&c, "images");
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![images.clone()], tok: tok.clone() };
    let steps = steps_in(SRC_GLANCE, "Saga::new(\"glance.upload\")");
    assert_same_steps(&steps, &UPLOAD_STEPS, "glance.upload");
    let size = 3 * MIB;
    let want = sha_bytes(&(0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let id = |it: &str| format!("fc-{tok}{it}");
    let sc = Scenario {
        name: "upload",
        setup: Box::new(|_| {}),
        args: Box::new(|it| vec![s("glance.upload"), s("images"), id(it), size.to_string()]),
        // Glance deletes the image data of a failed upload (the image goes to `killed`).
        recover: Box::new(|it| {
            glance_delete(&c, &images, &id(it));
            true
        }),
        verify: Box::new(|it| sha_of(&Image::open_at_snap(&images, &id(it), "snap").unwrap(), size) == want),
        teardown: Box::new(|it| glance_delete(&c, &images, &id(it))),
    };
    let sw = Sweep {
        recipe: "glance.upload",
        tok: tok.clone(),
        pools: vec![&images],
        backup_target: None,
        kill_env: None,
        slot_lease: None,
    };
    sw.run(&steps, &[sc]);
}

#[test]
fn nova_snapshot_crash_at_every_step() {
    let c = live!();
    let (images, vms) = (pool(&c, "images"), pool(&c, "vms"));
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![images.clone(), vms.clone()], tok: tok.clone() };
    let steps = steps_in(SRC_NOVA, "Saga::new(\"nova.snapshot\")");
    assert_same_steps(&steps, &nova::SNAPSHOT_STEPS, "nova.snapshot");
    let h = uuid::Uuid::new_v4().simple().to_string();
    let disk = format!("{}-{}-4{}-8{}-{tok}_disk", &h[..8], &h[8..12], &h[13..16], &h[17..20]);
    vms.create_image(&disk, 8 * MIB, &ImageOptions::new()).unwrap();
    write_pattern(&vms, &disk, 21, 2 * MIB);
    let want = sha_of(&Image::open_read_only(&vms, &disk).unwrap(), 8 * MIB);
    let id = |it: &str| format!("fc-{tok}{it}");
    let sc = Scenario {
        name: "snapshot",
        setup: Box::new(|_| {}),
        args: Box::new(|it| vec![s("nova.snapshot"), s("vms"), disk.clone(), s("images"), id(it)]),
        // Nova deletes the Glance image of a failed snapshot.
        recover: Box::new(|it| {
            glance_delete(&c, &images, &id(it));
            true
        }),
        verify: Box::new(|it| {
            sha_of(&Image::open_at_snap(&images, &id(it), "snap").unwrap(), 8 * MIB) == want
                && sha_of(&Image::open_read_only(&vms, &disk).unwrap(), 8 * MIB) == want
        }),
        teardown: Box::new(|it| glance_delete(&c, &images, &id(it))),
    };
    let sw = Sweep {
        recipe: "nova.snapshot",
        tok: tok.clone(),
        pools: vec![&images, &vms],
        backup_target: None,
        kill_env: None,
        slot_lease: None,
    };
    sw.run(&steps, &[sc]);
}

#[test]
fn cinder_volume_from_volume_with_flatten_crash_at_every_step() {
    let c = live!();
    let volumes = pool(&c, "volumes");
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![volumes.clone()], tok: tok.clone() };
    let steps = steps_in(SRC_CINDER_CREATE, "const OP: &str = \"cinder.create_from_volume\"");
    // base@snapshot -> src (depth 1): with max_clone_depth 1 a clone of src is too deep, so
    // the recipe takes its longest path (snapshot, protect (v1), clone, depth, flatten,
    // drop_clone_snap); max_clone_depth 0 takes the copy path.
    let base = format!("{tok}-base");
    cinder::create(&volumes, &base, 8 * MIB).unwrap();
    write_pattern(&volumes, &cinder::volume_name(&base), 31, 2 * MIB);
    cinder::create_snapshot(&volumes, &base, &format!("{tok}-s")).unwrap();
    let src = format!("{tok}-src");
    cinder::create_from_snapshot(&volumes, &base, &format!("{tok}-s"), &src, 8 * MIB, false).unwrap();
    let want = sha_of(&Image::open_read_only(&volumes, &cinder::volume_name(&src)).unwrap(), 8 * MIB);
    let dst = |it: &str| format!("{tok}{it}");
    let (src, dst, volumes, want) = (&src, &dst, &volumes, &want);
    let scenario = |name: &'static str, depth: &'static str| Scenario {
        name,
        setup: Box::new(|_| {}),
        args: Box::new(move |it| {
            vec![
                s("cinder.create_from_volume"),
                s("volumes"),
                src.clone(),
                dst(it),
                (8 * MIB).to_string(),
                s(depth),
                s("1"),
            ]
        }),
        // A failed create leaves the volume in `error`; Cinder deletes it with the delete
        // recipe (which also cleans the parent's clone snapshot), then the user retries.
        recover: Box::new(move |it| {
            cinder::delete_volume(volumes, &dst(it)).unwrap();
            true
        }),
        verify: Box::new(move |it| {
            sha_of(&Image::open_read_only(volumes, &cinder::volume_name(&dst(it))).unwrap(), 8 * MIB) == *want
        }),
        teardown: Box::new(move |it| {
            cinder::delete_volume(volumes, &dst(it)).unwrap();
        }),
    };
    let sw = Sweep {
        recipe: "cinder.create_from_volume",
        tok: tok.clone(),
        pools: vec![volumes],
        backup_target: None,
        kill_env: None,
        slot_lease: None,
    };
    sw.run(&steps, &[scenario("clone depth exceeded, v1, flatten", "1"), scenario("full copy (depth 0)", "0")]);
}

#[test]
fn cinder_snapshot_delete_with_children_crash_at_every_step() {
    let c = live!();
    let volumes = pool(&c, "volumes");
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![volumes.clone()], tok: tok.clone() };
    let steps = steps_in(SRC_CINDER_SNAPSHOT, "const OP: &str = \"cinder.delete_snapshot\"");
    let v = |it: &str| format!("{tok}{it}-v");
    let sn = |it: &str| format!("{tok}{it}-s");
    let child = |it: &str| format!("{tok}{it}-c");
    let want = sha_bytes(&pattern(41, 2 * MIB as usize));
    let sc = Scenario {
        name: "snapshot with a clone child",
        setup: Box::new(|it| {
            cinder::create(&volumes, &v(it), 8 * MIB).unwrap();
            write_pattern(&volumes, &cinder::volume_name(&v(it)), 41, 2 * MIB);
            cinder::create_snapshot(&volumes, &v(it), &sn(it)).unwrap();
            cinder::create_from_snapshot(&volumes, &v(it), &sn(it), &child(it), 8 * MIB, false).unwrap();
            // The volume moves on after the snapshot.
            write_pattern(&volumes, &cinder::volume_name(&v(it)), 42, MIB);
        }),
        args: Box::new(|it| vec![s("cinder.delete_snapshot"), s("volumes"), v(it), sn(it)]),
        recover: no_recover(),
        verify: Box::new(|it| {
            let ch = Image::open_read_only(&volumes, &cinder::volume_name(&child(it))).unwrap();
            ch.parent().unwrap().is_none() && sha_of(&ch, 2 * MIB) == want
        }),
        teardown: Box::new(|it| purge_run(&volumes, it)),
    };
    let sw = Sweep {
        recipe: "cinder.delete_snapshot",
        tok: tok.clone(),
        pools: vec![&volumes],
        backup_target: None,
        kill_env: None,
        slot_lease: None,
    };
    sw.run(&steps, &[sc]);
}

#[test]
fn cinder_volume_delete_crash_at_every_step() {
    let c = live!();
    let volumes = pool(&c, "volumes");
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![volumes.clone()], tok: tok.clone() };
    let steps = steps_in(SRC_CINDER_DELETE, "const OP: &str = \"cinder.delete_volume\"");
    let p = |it: &str| format!("{tok}{it}-p");
    let a = |it: &str| format!("{tok}{it}-a");
    let ch = |it: &str| format!("{tok}{it}-c");
    let want = sha_bytes(&pattern(51, 2 * MIB as usize));
    // p -> a (p@volume-a.clone_snap) -> c (a@volume-c.clone_snap); a has a backup snapshot.
    let chain = |it: &str| {
        let none = &mut Progress::none();
        cinder::create(&volumes, &p(it), 8 * MIB).unwrap();
        VolumeFromVolume::new(&p(it), &a(it), 8 * MIB).run(&volumes, none).unwrap();
        write_pattern(&volumes, &cinder::volume_name(&a(it)), 51, 2 * MIB);
        Image::open(&volumes, &cinder::volume_name(&a(it)))
            .unwrap()
            .snap_create(&backup::snap_name(&format!("{tok}{it}-b"), SystemTime::now()))
            .unwrap();
        VolumeFromVolume::new(&a(it), &ch(it), 8 * MIB).run(&volumes, none).unwrap();
    };
    let child_ok = |it: &str, want_parent: Option<String>| {
        let img = Image::open_read_only(&volumes, &cinder::volume_name(&ch(it))).unwrap();
        img.parent().unwrap().map(|x| format!("{}@{}", x.image, x.snap)) == want_parent && sha_of(&img, 2 * MIB) == want
    };
    let flatten = Scenario {
        name: "clone with a backup snapshot and a child (children flattened)",
        setup: Box::new(chain),
        args: Box::new(|it| vec![s("cinder.delete_volume"), s("volumes"), a(it)]),
        recover: no_recover(),
        verify: Box::new(|it| child_ok(it, None)),
        teardown: Box::new(|it| purge_run(&volumes, it)),
    };
    let keep = Scenario {
        name: "clone with a child kept as a clone (renamed .deleted)",
        setup: Box::new(chain),
        args: Box::new(|it| vec![s("cinder.delete_volume"), s("volumes"), a(it), s("keep")]),
        recover: no_recover(),
        verify: Box::new(|it| {
            let an = cinder::volume_name(&a(it));
            child_ok(it, Some(format!("{an}.deleted@{}", cinder::clone_snap_name(&cinder::volume_name(&ch(it))))))
        }),
        teardown: Box::new(|it| {
            cinder::delete_volume(&volumes, &ch(it)).unwrap();
            purge_run(&volumes, it);
        }),
    };
    let trash = Scenario {
        name: "volume with a snapshot (moved to the trash)",
        setup: Box::new(|it| {
            cinder::create(&volumes, &a(it), 8 * MIB).unwrap();
            Image::open(&volumes, &cinder::volume_name(&a(it)))
                .unwrap()
                .snap_create(&format!("snapshot-{tok}{it}"))
                .unwrap();
        }),
        args: Box::new(|it| vec![s("cinder.delete_volume"), s("volumes"), a(it)]),
        recover: no_recover(),
        verify: Box::new(|it| volumes.trash_list().unwrap().iter().any(|t| t.name == cinder::volume_name(&a(it)))),
        teardown: Box::new(|it| {
            for t in volumes.trash_list().unwrap().into_iter().filter(|t| t.name.contains(it)) {
                volumes.trash_restore(&t.id, &t.name).unwrap();
            }
            purge_run(&volumes, it);
        }),
    };
    let sw = Sweep {
        recipe: "cinder.delete_volume",
        tok: tok.clone(),
        pools: vec![&volumes],
        backup_target: None,
        kill_env: None,
        slot_lease: None,
    };
    sw.run(&steps, &[flatten, keep, trash]);
}

#[test]
fn backup_create_crash_at_every_step() {
    let c = live!();
    let c2 = common::cluster2();
    let volumes = pool(&c, "volumes");
    let backups = pool(&c2, "backups");
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![volumes.clone(), backups.clone()], tok: tok.clone() };
    let steps = steps_in(SRC_BACKUP_CREATE, "Saga::new(OP)");
    assert_same_steps(&steps, &backup::CREATE_STEPS, "backup.create");
    let vid = format!("{tok}-v");
    cinder::create(&volumes, &vid, 8 * MIB).unwrap();
    write_pattern(&volumes, &cinder::volume_name(&vid), 61, 2 * MIB);
    let vol = VolumeRef::cinder(&volumes, &vid);
    let b0 = format!("{tok}-b0");
    backup::Backup::new(&vol, &backups, &b0).run(&mut Progress::none()).unwrap();
    let bid = |it: &str| format!("{tok}{it}");
    let (vid, b0, bid, vol, backups) = (&vid, &b0, &bid, &vol, &backups);
    let scenario = |name: &'static str, incremental: bool| Scenario {
        name,
        setup: Box::new(|_| {}),
        args: Box::new(move |it| {
            let mut a = vec![s("backup.create"), s("volumes"), vid.clone(), s("backups"), bid(it)];
            if incremental {
                a.push(b0.clone());
            }
            a
        }),
        // A failed backup goes to `error`; Cinder's backup delete removes what it made.
        recover: Box::new(move |it| {
            match backup::delete_backup(backups, vid, &bid(it), Some(vol)) {
                Ok(_) => {}
                Err(e) if e.kind() == rbd_core::ErrorKind::NotFound => {}
                Err(e) => panic!("backup delete: {e}"),
            }
            true
        }),
        verify: Box::new(move |it| backup::verify(backups, vid, &bid(it), vol, &mut Progress::none()).unwrap().matches),
        teardown: Box::new(move |it| {
            backup::delete_backup(backups, vid, &bid(it), Some(vol)).unwrap();
        }),
    };
    let sw = Sweep {
        recipe: "backup.create",
        tok: tok.clone(),
        pools: vec![&volumes],
        backup_target: Some(backups),
        kill_env: None,
        slot_lease: None,
    };
    sw.run(&steps, &[scenario("full", false), scenario("incremental", true)]);
}

#[test]
fn backup_restore_crash_at_every_step() {
    let c = live!();
    let c2 = common::cluster2();
    let volumes = pool(&c, "volumes");
    let backups = pool(&c2, "backups");
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![volumes.clone(), backups.clone()], tok: tok.clone() };
    let steps = steps_in(SRC_BACKUP_RESTORE, "Saga::new(OP)");
    assert_same_steps(&steps, &backup::RESTORE_STEPS, "backup.restore");
    // A shared backup for the new/overwritten targets.
    let vid = format!("{tok}-v");
    cinder::create(&volumes, &vid, 8 * MIB).unwrap();
    write_pattern(&volumes, &cinder::volume_name(&vid), 71, 2 * MIB);
    let want = sha_of(&Image::open_read_only(&volumes, &cinder::volume_name(&vid)).unwrap(), 8 * MIB);
    let bid = format!("{tok}-b");
    backup::Backup::new(&VolumeRef::cinder(&volumes, &vid), &backups, &bid).run(&mut Progress::none()).unwrap();
    let target = |it: &str| format!("volume-{tok}{it}-t");
    let verify = |it: &str| sha_of(&Image::open_read_only(&volumes, &target(it)).unwrap(), 8 * MIB) == want;
    let args = |it: &str| vec![s("backup.restore"), s("backups"), vid.clone(), bid.clone(), s("volumes"), target(it)];
    let new_target = Scenario {
        name: "into a new volume",
        setup: Box::new(|_| {}),
        args: Box::new(args),
        recover: no_recover(),
        verify: Box::new(verify),
        teardown: Box::new(|it| purge_run(&volumes, it)),
    };
    let overwrite = Scenario {
        name: "over a volume holding other data (compare)",
        setup: Box::new(|it| {
            volumes.create_image(&target(it), 8 * MIB, &ImageOptions::new()).unwrap();
            write_pattern(&volumes, &target(it), 72, 3 * MIB);
        }),
        args: Box::new(args),
        recover: no_recover(),
        verify: Box::new(verify),
        teardown: Box::new(|it| purge_run(&volumes, it)),
    };
    // Back to the source volume itself, which still has the backup's snapshot (rollback).
    let rv = |it: &str| format!("{tok}{it}-rv");
    let rb = |it: &str| format!("{tok}{it}-rb");
    let rollback = Scenario {
        name: "back into the source volume (rollback)",
        setup: Box::new(|it| {
            cinder::create(&volumes, &rv(it), 8 * MIB).unwrap();
            write_pattern(&volumes, &cinder::volume_name(&rv(it)), 71, 2 * MIB);
            backup::Backup::new(&VolumeRef::cinder(&volumes, &rv(it)), &backups, &rb(it))
                .run(&mut Progress::none())
                .unwrap();
            write_pattern(&volumes, &cinder::volume_name(&rv(it)), 73, MIB);
        }),
        args: Box::new(|it| {
            vec![s("backup.restore"), s("backups"), rv(it), rb(it), s("volumes"), cinder::volume_name(&rv(it))]
        }),
        recover: no_recover(),
        verify: Box::new(|it| {
            sha_of(&Image::open_read_only(&volumes, &cinder::volume_name(&rv(it))).unwrap(), 8 * MIB) == want
        }),
        teardown: Box::new(|it| {
            backup::delete_backup(&backups, &rv(it), &rb(it), Some(&VolumeRef::cinder(&volumes, &rv(it)))).unwrap();
            purge_run(&volumes, it);
        }),
    };
    let sw = Sweep {
        recipe: "backup.restore",
        tok: tok.clone(),
        pools: vec![&volumes],
        backup_target: Some(&backups),
        kill_env: None,
        slot_lease: None,
    };
    sw.run(&steps, &[new_target, overwrite, rollback]);
}

#[test]
fn group_snapshot_crash_at_every_step() {
    let c = live!();
    let volumes = pool(&c, "volumes");
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![volumes.clone()], tok: tok.clone() };
    let steps = steps_in(SRC_GROUPS, "Saga::new(\"groups.snapshot\")");
    assert_same_steps(&steps, &groups::SNAPSHOT_STEPS, "groups.snapshot");
    let cg = ConsistencyGroups::new(&volumes);
    let gid = format!("{tok}-grp");
    let members = [format!("{tok}-m1"), format!("{tok}-m2")];
    let mut want = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        cinder::create(&volumes, m, 8 * MIB).unwrap();
        write_pattern(&volumes, &cinder::volume_name(m), 81 + i as u64, 2 * MIB);
        want.insert(m.clone(), sha_of(&Image::open_read_only(&volumes, &cinder::volume_name(m)).unwrap(), 8 * MIB));
    }
    cg.create(&gid, &GroupSpec::new("fault", &["rbd"])).unwrap();
    cg.add_volumes(&gid, &[members[0].as_str(), members[1].as_str()]).unwrap();
    let snap = |it: &str| format!("{tok}{it}");
    let exists = |it: &str| cg.snapshots(&gid).unwrap().iter().any(|g| g.id == snap(it));
    let sc = Scenario {
        name: "two members",
        setup: Box::new(|_| {}),
        args: Box::new(|it| vec![s("groups.snapshot"), s("volumes"), gid.clone(), snap(it)]),
        // A failed cgsnapshot goes to `error`; Cinder deletes it.
        recover: Box::new(|it| {
            if volumes.group_list().unwrap().contains(&groups::rbd_group_name(&gid))
                && rbd_core::Group::new(&volumes, &groups::rbd_group_name(&gid))
                    .snaps()
                    .unwrap()
                    .iter()
                    .any(|g| g.name == groups::rbd_snap_name(&snap(it)))
            {
                cg.delete_snapshot(&gid, &snap(it)).unwrap();
            }
            true
        }),
        verify: Box::new(|it| {
            let gs = cg.snapshot(&gid, &snap(it)).unwrap();
            gs.complete
                && gs.members.len() == 2
                && gs.members.iter().all(|m| {
                    let img = Image::open_at_snap_id(&volumes, &m.image, m.snap_id).unwrap();
                    Some(&sha_of(&img, 8 * MIB)) == want.get(&m.volume_id)
                })
        }),
        teardown: Box::new(|it| {
            if exists(it) {
                cg.delete_snapshot(&gid, &snap(it)).unwrap();
            }
        }),
    };
    let sw = Sweep {
        recipe: "groups.snapshot",
        tok: tok.clone(),
        pools: vec![&volumes],
        backup_target: None,
        kill_env: None,
        slot_lease: None,
    };
    sw.run(&steps, &[sc]);
    cg.delete(&gid, true).unwrap();
}

#[test]
fn flatten_slot_crash_while_held() {
    let c = live!();
    let (volumes, rbd) = (pool(&c, "volumes"), pool(&c, "rbd"));
    let tok = common::token();
    let _cleanup = Cleanup { pools: vec![volumes.clone(), rbd.clone()], tok: tok.clone() };
    // The boundaries of a throttled flatten: the throttle's observer hooks and the flatten's
    // progress callback.
    let steps: Vec<String> = ["acquired", "flatten", "releasing"].iter().map(|x| x.to_string()).collect();
    let prefix = format!("fc-{tok}-slot");
    // Make the slot image now, so every run starts from the same state.
    let mut t = Throttle::new(&rbd, 1).unwrap();
    t.prefix(&prefix);
    drop(t.acquire(Some(Duration::from_secs(30))).unwrap());
    let parent = format!("fc-{tok}-parent");
    volumes.create_image(&parent, 16 * MIB, &ImageOptions::new()).unwrap();
    write_pattern(&volumes, &parent, 91, 16 * MIB);
    Image::open(&volumes, &parent).unwrap().snap_create("s").unwrap();
    let want = sha_of(&Image::open_at_snap(&volumes, &parent, "s").unwrap(), 16 * MIB);
    let child = |it: &str| format!("fc-{tok}{it}-c");
    let mut v2 = ImageOptions::new();
    v2.clone_format(CloneFormat::V2);
    let sc = Scenario {
        name: "one slot, 16 MiB clone",
        setup: Box::new(|it| rbd_core::clone_image(&volumes, &parent, "s", &volumes, &child(it), &v2).unwrap()),
        args: Box::new(|it| {
            vec![s("throttle.flatten"), s("volumes"), child(it), s("rbd"), prefix.clone(), SLOT_LEASE_MS.to_string()]
        }),
        // Flattened already (killed just before the release): nothing to run again; the next
        // flatten through the throttle takes and releases the slot, as a service's would.
        recover: Box::new(|it| {
            let again = Image::open_read_only(&volumes, &child(it)).unwrap().parent().unwrap().is_some();
            if !again {
                drop(t.acquire(Some(Duration::from_secs(30))).unwrap());
            }
            again
        }),
        verify: Box::new(|it| {
            let img = Image::open_read_only(&volumes, &child(it)).unwrap();
            img.parent().unwrap().is_none() && sha_of(&img, 16 * MIB) == want
        }),
        teardown: Box::new(|it| purge_run(&volumes, it)),
    };
    let sw = Sweep {
        recipe: "throttle.flatten",
        tok: tok.clone(),
        pools: vec![&volumes, &rbd],
        backup_target: None,
        kill_env: Some("RBD_RUNNER_KILL_AT"),
        slot_lease: Some(Duration::from_millis(SLOT_LEASE_MS)),
    };
    sw.run(&steps, &[sc]);
    t.remove_slots().unwrap();
}
