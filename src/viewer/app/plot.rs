//! The size-over-time plot of the selected tracked finding (egui_plot): long and short axis at
//! each timepoint, by days since the baseline study when every study has a date, with a table of
//! the sizes, the area and the change from baseline and from nadir (long axis, as RECIST).

use eframe::egui::{self, Color32, RichText};
use egui_plot::{Legend, Line, MarkerShape, Plot, Points};

use super::{App, AppCommand, TimelineCommand};

/// One timepoint of a tracked finding, as plotted.
#[derive(Clone, Debug, PartialEq)]
pub struct SizePoint {
    pub image: String,
    pub frame: u32,
    /// The study date ("2024-03-01"), else the image key.
    pub label: String,
    /// Days since the baseline study, or the timepoint's index when a date is missing.
    pub x: f64,
    pub long_axis: f64,
    pub short_axis: f64,
    pub area: f64,
    pub change_from_baseline_pct: f64,
    pub change_from_nadir_pct: Option<f64>,
}

/// What the plot shows for one tracked finding.
#[derive(Clone, Debug, PartialEq)]
pub struct SizePlot {
    pub finding: String,
    pub label: String,
    /// "mm" or "px".
    pub units: String,
    /// What x counts: "days since baseline" or "timepoint".
    pub x_axis: &'static str,
    /// What the sizes measure: the track's `axes` (the lesion's outline or the boxes' sides).
    pub axes: String,
    pub points: Vec<SizePoint>,
}

fn date(da: &str) -> Option<chrono::NaiveDate> {
    let digits: String = da.chars().filter(char::is_ascii_digit).collect();
    chrono::NaiveDate::parse_from_str(&digits, "%Y%m%d").ok()
}

impl App {
    /// The plot of the selected finding, when it has a track.
    pub fn size_plot(&self) -> Option<SizePlot> {
        let f = self.doc.finding(self.selected.as_deref()?)?;
        let track = f.track.as_ref()?;
        let dates: Vec<Option<chrono::NaiveDate>> =
            track.measurements.iter().map(|m| self.doc.image(&m.image).and_then(|i| i.study_date.as_deref()).and_then(date)).collect();
        let by_date = dates.iter().all(Option::is_some) && !dates.is_empty();
        let points = track
            .measurements
            .iter()
            .zip(&dates)
            .enumerate()
            .map(|(k, (m, d))| SizePoint {
                image: m.image.clone(),
                frame: m.frame,
                label: d.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_else(|| m.image.clone()),
                x: match (by_date, d, dates[0]) {
                    (true, Some(d), Some(first)) => (*d - first).num_days() as f64,
                    _ => k as f64,
                },
                long_axis: m.long_axis,
                short_axis: m.short_axis,
                area: m.area,
                change_from_baseline_pct: m.change_from_baseline_pct,
                change_from_nadir_pct: m.change_from_nadir_pct,
            })
            .collect();
        Some(SizePlot {
            finding: f.id.clone(),
            label: f.label.clone(),
            units: track.units.clone(),
            x_axis: if by_date { "days since baseline" } else { "timepoint" },
            axes: track.extra.get("axes").and_then(|v| v.as_str()).unwrap_or(crate::annotation::track::BOX_AXES).to_string(),
            points,
        })
    }
}

fn signed(v: f64) -> String {
    format!("{v:+.1} %")
}

/// The plot and its table in a panel above the status bar, while the selected finding has a track.
pub(super) fn plot_panel_ui(app: &App, ui: &mut egui::Ui, out: &mut Vec<AppCommand>) {
    let Some(plot) = app.size_plot() else { return };
    if !app.show_plot {
        egui::Panel::bottom("size plot").show(ui, |ui| {
            if ui.button(format!("Show the size of {} over time", plot.label)).clicked() {
                out.push(AppCommand::Timeline(TimelineCommand::ShowPlot(true)));
            }
        });
        return;
    }
    egui::Panel::bottom("size plot").resizable(true).default_size(210.0).show(ui, |ui| {
        ui.horizontal(|ui| {
            ui.heading(format!("Size over time: {}", plot.label));
            if ui.small_button("Hide").clicked() {
                out.push(AppCommand::Timeline(TimelineCommand::ShowPlot(false)));
            }
        });
        ui.columns(2, |cols| {
            let units = plot.units.clone();
            let long: Vec<[f64; 2]> = plot.points.iter().map(|p| [p.x, p.long_axis]).collect();
            let short: Vec<[f64; 2]> = plot.points.iter().map(|p| [p.x, p.short_axis]).collect();
            let labels: Vec<(f64, String)> = plot.points.iter().map(|p| (p.x, p.label.clone())).collect();
            let name = format!("{} size over time ({}), by {}", plot.label, plot.units, plot.x_axis);
            Plot::new(("size plot", plot.finding.as_str()))
                .height(160.0)
                // Sizes sit near the top of a range from 0: the legend goes bottom right, and the
                // margins keep the first and last points and their markers off the frame.
                .legend(Legend::default().position(egui_plot::Corner::RightBottom))
                .set_margin_fraction(egui::Vec2::new(0.06, 0.18))
                .x_axis_label(plot.x_axis)
                .y_axis_label(units.clone())
                .include_y(0.0)
                .allow_scroll(false)
                .label_formatter(move |h| match h {
                    egui_plot::HoverPosition::NearDataPoint { plot_name, position, index } => {
                        let date = labels.get(*index).map(|(_, l)| l.as_str()).unwrap_or("");
                        Some(format!("{plot_name}\n{date}\n{:.1} {units}", position.y))
                    }
                    egui_plot::HoverPosition::Elsewhere { .. } => None,
                })
                .show(&mut cols[0], |p| {
                    p.line(Line::new("long axis", long.clone()).color(Color32::from_rgb(255, 170, 60)).width(2.0));
                    p.points(Points::new("long axis", long).color(Color32::from_rgb(255, 170, 60)).radius(4.0).shape(MarkerShape::Circle));
                    p.line(Line::new("short axis", short.clone()).color(Color32::from_rgb(90, 180, 255)).width(2.0));
                    p.points(
                        Points::new("short axis", short).color(Color32::from_rgb(90, 180, 255)).radius(3.5).shape(MarkerShape::Square),
                    );
                })
                .response
                .accessible_name(name);
            let ui = &mut cols[1];
            egui::Grid::new(("size table", plot.finding.as_str())).striped(true).show(ui, |ui| {
                for h in ["date", "long", "short", "area", "vs baseline", "vs nadir"] {
                    ui.label(RichText::new(h).strong());
                }
                ui.end_row();
                let u = &plot.units;
                for p in &plot.points {
                    ui.label(&p.label);
                    ui.label(format!("{:.1} {u}", p.long_axis));
                    ui.label(format!("{:.1} {u}", p.short_axis));
                    ui.label(format!("{:.0} {u}²", p.area));
                    ui.label(signed(p.change_from_baseline_pct));
                    ui.label(p.change_from_nadir_pct.map(signed).unwrap_or_else(|| "—".into()));
                    ui.end_row();
                }
            });
            ui.label(RichText::new(format!("Axes: {}; changes are of the long axis.", plot.axes)).small());
        });
    });
}
