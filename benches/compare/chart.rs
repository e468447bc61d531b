//! The PNG chart of a report (plotters, bitmap backend; text drawn with the DejaVu Sans font of
//! the system, registered at run time: without it the chart is skipped).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

type Bars = Vec<(String, f64, bool)>;

/// One bar to look up: (comparison, case, method, rbd_cache, JSON key, label, ours).
type BarSpec<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, &'a str, &'a str, bool);

const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes =
            FONTS.iter().find_map(|p| std::fs::read(p).ok()).ok_or("no DejaVuSans.ttf found (fonts-dejavu-core)")?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "invalid font file".to_string())
    })
    .clone()
}

fn value(results: &[Value], comparison: &str, case: &str, method: &str, cache: Option<&str>, key: &str) -> Option<f64> {
    results
        .iter()
        .find(|r| {
            r["comparison"] == comparison
                && r["case"] == case
                && r["method"] == method
                && cache.map(|c| r["rbd_cache"] == c).unwrap_or(true)
        })
        .and_then(|r| r[key].as_f64())
}

fn collect(results: &[Value], items: &[BarSpec<'_>]) -> Bars {
    items
        .iter()
        .filter_map(|(c, case, m, cache, key, label, ours)| {
            value(results, c, case, m, *cache, key).map(|v| (label.to_string(), v, *ours))
        })
        .collect()
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    bars: &Bars,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    if bars.is_empty() {
        return Ok(());
    }
    let ymax = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9) * 1.18;
    let n = bars.len();
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(52)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..ymax)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_style(("sans-serif", 12))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => labels.get(*i).cloned().unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .y_label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| e.to_string())?;
    let ours: Vec<bool> = bars.iter().map(|b| b.2).collect();
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .margin(14)
                .style_func(move |x, _| {
                    let i = match x {
                        SegmentValue::Exact(i) | SegmentValue::CenterOf(i) => *i,
                        SegmentValue::Last => 0,
                    };
                    if ours.get(i).copied().unwrap_or(false) {
                        RGBColor(31, 119, 180).filled()
                    } else {
                        RGBColor(160, 160, 160).filled()
                    }
                })
                .data(bars.iter().enumerate().map(|(i, b)| (i, b.1))),
        )
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            let txt = if b.1 >= 100.0 { format!("{:.0}", b.1) } else { format!("{:.2}", b.1) };
            let style = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
            Text::new(txt, (SegmentValue::CenterOf(i), b.1 + ymax * 0.01), style)
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Draws the four panels (upload MiB/s, incremental backup s, clones/s, backup scaling s).
pub fn draw(results: &[Value], png: &Path, mode: &str) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(png, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(
            &format!("rbd-core vs the rbd CLI, python-rbd and OpenStack's ways ({mode} mode; blue = ours)"),
            ("sans-serif", 22),
        )
        .map_err(|e| e.to_string())?;
    let areas = root.split_evenly((2, 2));
    let up = collect(
        results,
        &[
            ("upload", "random", "ours-hash", Some("on"), "mib_per_s", "ours md5+sha512", true),
            ("upload", "random", "ours-nohash", Some("on"), "mib_per_s", "ours no hash", true),
            ("upload", "random", "rbd-import", Some("on"), "mib_per_s", "rbd import", false),
            ("upload", "random", "glance-store-py", Some("on"), "mib_per_s", "glance_store py", false),
            ("upload", "ceiling", "rbd-bench", Some("on"), "mib_per_s", "rbd bench (ceiling)", false),
        ],
    );
    panel(&areas[0], "Upload, random data, rbd_cache on (MiB/s, higher is better)", &up)?;
    let bk = collect(
        results,
        &[
            ("backup", "incremental", "recipe", None, "median_s", "backup recipe", true),
            ("backup", "incremental", "transfer", None, "median_s", "Transfer", true),
            ("backup", "incremental", "cinder-pipe", None, "median_s", "Cinder pipe", false),
            ("backup", "incremental", "cli-file", None, "median_s", "CLI via file", false),
        ],
    );
    panel(&areas[1], "Incremental backup (s, lower is better)", &bk)?;
    let cl = collect(
        results,
        &[
            ("clones", "boot from image", "nova-recipe", None, "ops_per_s", "Nova recipe", true),
            ("clones", "boot from image", "py-driver-clone", None, "ops_per_s", "driver.clone py", false),
            ("clones", "boot from image", "py-boot", None, "ops_per_s", "boot path py", false),
            ("clones", "boot from image", "py-shared", None, "ops_per_s", "py shared conn", false),
        ],
    );
    panel(&areas[2], "Boot-from-image clones per second (higher is better)", &cl)?;
    let mut sc: Bars = Vec::new();
    for p in [1, 10, 100] {
        let case = format!("backup {p}%");
        sc.extend(collect(
            results,
            &[
                ("scaling", &case, "recipe", None, "median_s", &format!("ours {p}%"), true),
                ("scaling", &case, "cinder-pipe", None, "median_s", &format!("pipe {p}%"), false),
            ],
        ));
    }
    panel(&areas[3], "Incremental backup vs share changed (s)", &sc)?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
