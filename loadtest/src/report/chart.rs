//! Charts for the HTML report, drawn by plotters' SVG backend: an x/y chart
//! (lines, dots, a strip of markers for values that could not be measured, an
//! optional right-hand axis, an optional target line, hover bands) and a bar
//! chart. Every chart has a title, axes with tick labels, axis labels with units,
//! a legend and `<title>` tooltips. Non-finite values are never drawn, and a chart
//! without data becomes a "no data" note.
//!
//! plotters draws everything but the tooltips: its SVG backend has no way to
//! attach a `<title>` to a shape, so [`Tips`] adds transparent hover shapes,
//! placed with the chart's own coordinate mapping, after it has finished.

use std::fmt::Write as _;
use std::ops::Range;

use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::escape::escape;

/// Canvas size, pixels (the page scales it).
const W: u32 = 720;
const H: u32 = 320;
/// Space above the plot for the title and the legend, and beside it for a y axis.
const TOP: i32 = 52;
const SIDE: i32 = 64;
/// Height of the strip above the plot for values that could not be measured.
const MISSING_STRIP: i32 = 24;
/// At most this many bar labels; more are thinned out.
const MAX_BAR_LABELS: usize = 12;
const FONT: &str = "sans-serif";
const INK: RGBColor = RGBColor(0x1f, 0x23, 0x28);
const MUTED: RGBColor = RGBColor(0x59, 0x63, 0x6e);
const GRID: RGBColor = RGBColor(0xea, 0xee, 0xf2);
const TARGET: RGBColor = RGBColor(0xcf, 0x22, 0x2e);

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Style {
    /// Connected line; a missing value breaks it.
    Line,
    /// Same, dashed (the right-hand series).
    Dashed,
    /// One dot per point.
    Dots,
    /// A cross per point in a strip above the plot, whatever its value (values
    /// that could not be measured).
    Missing,
}

/// One point of a series.
pub(super) struct Point {
    /// X value.
    pub(super) x: f64,
    /// Y value; `None` leaves a gap.
    pub(super) y: Option<f64>,
    /// Tooltip (dots and missing markers).
    pub(super) tip: String,
}

/// A named series.
pub(super) struct Series {
    /// Legend name.
    pub(super) name: String,
    /// Colour.
    pub(super) color: RGBColor,
    /// How it is drawn.
    pub(super) style: Style,
    /// Points.
    pub(super) points: Vec<Point>,
}

/// A chart of series against a numeric x axis.
pub(super) struct XyChart {
    /// Title.
    pub(super) title: String,
    /// X axis label with unit.
    pub(super) x_label: String,
    /// Left y axis label with unit.
    pub(super) y_label: String,
    /// Series on the left axis.
    pub(super) series: Vec<Series>,
    /// A series on its own right-hand axis, with that axis's label.
    pub(super) right: Option<(String, Series)>,
    /// A dashed horizontal target line on the left axis, with its label.
    pub(super) target: Option<(f64, String)>,
    /// Tooltips over vertical bands, one per x value.
    pub(super) bands: Vec<(f64, String)>,
}

/// One bar.
pub(super) struct Bar {
    /// X axis label.
    pub(super) label: String,
    /// Height.
    pub(super) value: f64,
    /// Colour.
    pub(super) color: RGBColor,
    /// Tooltip.
    pub(super) tip: String,
}

/// A chart of labelled bars.
pub(super) struct BarChart {
    /// Title.
    pub(super) title: String,
    /// X axis label with unit.
    pub(super) x_label: String,
    /// Y axis label with unit.
    pub(super) y_label: String,
    /// Bars, left to right.
    pub(super) bars: Vec<Bar>,
    /// Legend entries (name, colour).
    pub(super) legend: Vec<(String, RGBColor)>,
}

/// A point on the canvas, pixels.
type Px = (i32, i32);
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Plot<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
type Drawn<T = ()> = Result<T, DrawingAreaErrorKind<std::io::Error>>;

/// Transparent hover shapes with a `<title>` each, in pixels (integers, so never
/// NaN), added to the chart's SVG after plotters has drawn it.
#[derive(Default)]
struct Tips(String);

impl Tips {
    fn rect(&mut self, (l, t): Px, (r, b): Px, tip: &str) {
        let (w, h) = ((r - l).max(0), (b - t).max(0));
        let _ = write!(
            self.0,
            "<rect class=\"tip\" x=\"{l}\" y=\"{t}\" width=\"{w}\" height=\"{h}\"><title>{}</title></rect>",
            escape(tip)
        );
    }

    /// A square of side `2 × r` around `(x, y)`.
    fn around(&mut self, (x, y): Px, r: i32, tip: &str) {
        self.rect((x - r, y - r), (x + r, y + r), tip);
    }
}

/// The note shown instead of a chart without data.
fn no_data(title: &str) -> String {
    note(title, "no data")
}

fn note(title: &str, text: &str) -> String {
    format!(
        "<div class=\"chart nodata\"><div class=\"ctitle\">{}</div><p>{}</p></div>\n",
        escape(title),
        escape(text)
    )
}

/// Draws one chart: its title and legend, then `draw`, which returns the
/// tooltips; a drawing error becomes a note.
fn render(
    title: &str,
    legend: &[(&str, RGBColor)],
    draw: impl FnOnce(&Area<'_>) -> Drawn<Tips>,
) -> String {
    let mut svg = String::new();
    let drawn = {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        heading(&root, title, legend)
            .and_then(|()| draw(&root))
            .and_then(|tips| root.present().map(|()| tips))
    };
    match drawn {
        Ok(tips) => {
            if let Some(end) = svg.rfind("</svg>") {
                svg.insert_str(end, &tips.0);
            }
            format!(
                "<figure class=\"chart\" role=\"img\" aria-label=\"{}\">{svg}</figure>\n",
                escape(title)
            )
        }
        Err(e) => note(title, &format!("the chart could not be drawn: {e}")),
    }
}

/// Text of `px` pixels (plotters' SVG backend writes font sizes divided by 1.24).
fn text(px: f64, color: RGBColor) -> TextStyle<'static> {
    (FONT, px * 1.24).into_font().color(&color)
}

/// The white canvas, the title and the legend entries in a row above the plot.
fn heading(root: &Area<'_>, title: &str, legend: &[(&str, RGBColor)]) -> Drawn {
    root.fill(&WHITE)?;
    let style = (FONT, 16.0 * 1.24)
        .into_font()
        .style(FontStyle::Bold)
        .color(&INK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    root.draw(&Text::new(title.to_owned(), (W as i32 / 2, 18), style))?;
    let mut x = SIDE;
    for (name, color) in legend {
        root.draw(&Rectangle::new([(x, 34), (x + 12, 46)], color.filled()))?;
        let style = text(11.0, MUTED).pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new((*name).to_owned(), (x + 16, 40), style))?;
        x += 28 + (6.5 * name.chars().count() as f64) as i32;
    }
    Ok(())
}

/// A tick label: as many decimals as needed, "k" and "M" for large values.
fn tick(v: &f64) -> String {
    let (v, suffix) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (*v, ""),
    };
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    let s = if s == "-0" { "0" } else { s };
    format!("{s}{suffix}")
}

/// From 0 (or below) to the largest finite value with 5 % headroom, stretched
/// to show `target` when that is at most twice the largest value; never empty.
fn range(values: impl Iterator<Item = f64>, target: Option<f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((0.0_f64, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let hi = match target {
        Some(t) if t > hi && t <= 2.0 * hi => t,
        _ => hi,
    };
    if hi > lo {
        lo..hi + (hi - lo) * 0.05
    } else {
        lo..lo + 1.0
    }
}

fn finite(p: &Point) -> Option<(f64, f64)> {
    let y = p.y.filter(|y| y.is_finite())?;
    p.x.is_finite().then_some((p.x, y))
}

/// Unbroken runs of finite points (a missing value breaks a line).
fn runs(points: &[Point]) -> Vec<Vec<(f64, f64)>> {
    let mut runs = vec![Vec::new()];
    for p in points {
        match (finite(p), runs.last_mut()) {
            (Some(xy), Some(run)) => run.push(xy),
            _ => runs.push(Vec::new()),
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

/// The look of the axes, grid lines, tick labels and axis labels.
fn style_mesh<X: Ranged, Y: Ranged>(m: &mut MeshStyle<'_, '_, X, Y, SVGBackend<'_>>) {
    m.disable_x_mesh()
        .y_labels(6)
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID)
        .axis_style(MUTED)
        .label_style(text(11.0, MUTED))
        .axis_desc_style(text(12.0, INK));
}

/// Draws a left-axis series; missing markers go in the strip above the plot.
fn draw_series(root: &Area<'_>, chart: &mut Plot<'_, '_>, s: &Series, tips: &mut Tips) -> Drawn {
    let color = s.color;
    match s.style {
        Style::Line | Style::Dashed => {
            for run in runs(&s.points) {
                if let [xy] = run.as_slice() {
                    chart.draw_series([Circle::new(*xy, 2, color.filled())])?;
                } else if s.style == Style::Dashed {
                    chart.draw_series(DashedLineSeries::new(run, 6, 4, color.stroke_width(2)))?;
                } else {
                    chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?;
                }
            }
        }
        Style::Dots => {
            for (p, xy) in s.points.iter().filter_map(|p| Some((p, finite(p)?))) {
                chart.draw_series([Circle::new(xy, 4, color.filled())])?;
                tips.around(chart.backend_coord(&xy), 5, &p.tip);
            }
        }
        Style::Missing => {
            let (x0, top) = (chart.x_range().start, chart.y_range().end);
            let (left, y) = chart.backend_coord(&(x0, top));
            let y = y - MISSING_STRIP / 2;
            let style = text(11.0, MUTED).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(s.name.clone(), (left - 6, y), style))?;
            for p in s.points.iter().filter(|p| p.x.is_finite()) {
                let (x, _) = chart.backend_coord(&(p.x, top));
                root.draw(&Cross::new((x, y), 5, color.stroke_width(2)))?;
                tips.around((x, y), 6, &p.tip);
            }
        }
    }
    Ok(())
}

/// Transparent full-height bands around each x, each with a tooltip.
fn hover_bands(chart: &Plot<'_, '_>, bands: &[(f64, String)], tips: &mut Tips) {
    let (x0, y0) = (chart.x_range().start, chart.y_range().start);
    let (left, bottom) = chart.backend_coord(&(x0, y0));
    let (right, top) = chart.backend_coord(&(chart.x_range().end, chart.y_range().end));
    let mut xs: Vec<(i32, &str)> = bands
        .iter()
        .filter(|(x, _)| x.is_finite())
        .map(|(x, tip)| (chart.backend_coord(&(*x, y0)).0, tip.as_str()))
        .collect();
    xs.sort_by_key(|(x, _)| *x);
    for (i, (x, tip)) in xs.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|j| xs.get(j));
        let l = prev.map_or(left, |p| (p.0 + x) / 2).max(left);
        let r = xs.get(i + 1).map_or(right, |n| (n.0 + x) / 2).min(right);
        tips.rect((l, top), (r, bottom), tip);
    }
}

/// Renders an x/y chart, or "no data" when no point has a finite x.
pub(super) fn xy_chart(ch: &XyChart) -> String {
    let all = || ch.series.iter().chain(ch.right.as_ref().map(|(_, s)| s));
    let xs = || {
        all()
            .flat_map(|s| s.points.iter().map(|p| p.x))
            .filter(|x| x.is_finite())
    };
    if xs().next().is_none() {
        return no_data(&ch.title);
    }
    let xr = range(xs(), None);
    let ys = ch
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.y));
    let yr = range(ys, ch.target.as_ref().map(|(t, _)| *t));
    // Values that could not be measured get a strip of their own above the plot.
    let strip = ch
        .series
        .iter()
        .any(|s| s.style == Style::Missing && s.points.iter().any(|p| p.x.is_finite()));
    let legend: Vec<(&str, RGBColor)> = all().map(|s| (s.name.as_str(), s.color)).collect();
    render(&ch.title, &legend, |root| {
        let mut tips = Tips::default();
        let right = ch.right.as_ref().map(|(label, s)| {
            let r = range(s.points.iter().filter_map(|p| p.y), None);
            (label, s, r)
        });
        let mut chart = ChartBuilder::on(root)
            .margin_top(TOP + if strip { MISSING_STRIP } else { 0 })
            .margin_right(10)
            .margin_bottom(8)
            .x_label_area_size(40)
            .y_label_area_size(SIDE)
            .right_y_label_area_size(if right.is_some() { SIDE } else { 0 })
            .build_cartesian_2d(xr.clone(), yr.clone())?
            // Before the mesh, so the left axis's labels stay on the left.
            .set_secondary_coord(
                xr.clone(),
                right.as_ref().map_or(yr.clone(), |(_, _, r)| r.clone()),
            );
        let mut mesh = chart.configure_mesh();
        style_mesh(&mut mesh);
        mesh.x_labels(8)
            .x_desc(ch.x_label.as_str())
            .y_desc(ch.y_label.as_str())
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .draw()?;
        if let Some((v, label)) = ch.target.as_ref().filter(|(v, _)| yr.contains(v)) {
            let line = [(xr.start, *v), (xr.end, *v)];
            chart.draw_series(DashedLineSeries::new(line, 4, 4, TARGET.stroke_width(1)))?;
            let (x, y) = chart.backend_coord(&(xr.end, *v));
            let style = text(11.0, MUTED).pos(Pos::new(HPos::Right, VPos::Bottom));
            root.draw(&Text::new(label.clone(), (x - 4, y - 3), style))?;
        }
        for s in &ch.series {
            draw_series(root, &mut chart, s, &mut tips)?;
        }
        if let Some((label, s, _)) = right {
            chart
                .configure_secondary_axes()
                .axis_style(MUTED)
                .label_style(text(11.0, MUTED))
                .axis_desc_style(text(12.0, INK))
                .y_labels(6)
                .y_desc(label.as_str())
                .y_label_formatter(&tick)
                .draw()?;
            for run in runs(&s.points) {
                let style = s.color.stroke_width(2);
                chart.draw_secondary_series(DashedLineSeries::new(run, 6, 4, style))?;
            }
        }
        hover_bands(&chart, &ch.bands, &mut tips);
        Ok(tips)
    })
}

/// Renders a bar chart, or "no data" without bars.
pub(super) fn bar_chart(ch: &BarChart) -> String {
    let Some(last) = ch.bars.len().checked_sub(1) else {
        return no_data(&ch.title);
    };
    let value = |b: &Bar| {
        if b.value.is_finite() {
            b.value.max(0.0)
        } else {
            0.0
        }
    };
    let yr = range(ch.bars.iter().map(value), None);
    let legend: Vec<(&str, RGBColor)> = ch.legend.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    render(&ch.title, &legend, |root| {
        let mut tips = Tips::default();
        let mut chart = ChartBuilder::on(root)
            .margin_top(TOP)
            .margin_right(10)
            .margin_bottom(8)
            .x_label_area_size(40)
            .y_label_area_size(SIDE)
            // One segment per bar (the range is inclusive); a lone bar gets an
            // empty neighbour, as plotters cannot map a range of one value.
            .build_cartesian_2d((0..last.max(1)).into_segmented(), yr.clone())?;
        let label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => ch
                .bars
                .get(*i)
                .map_or_else(String::new, |b| b.label.clone()),
            _ => String::new(),
        };
        let mut mesh = chart.configure_mesh();
        style_mesh(&mut mesh);
        mesh.x_labels(ch.bars.len().min(MAX_BAR_LABELS))
            .x_desc(ch.x_label.as_str())
            .y_desc(ch.y_label.as_str())
            .x_label_formatter(&label)
            .y_label_formatter(&tick)
            .draw()?;
        for (i, b) in ch.bars.iter().enumerate() {
            let (l, r) = (SegmentValue::Exact(i), SegmentValue::Exact(i + 1));
            let mut bar =
                Rectangle::new([(l.clone(), 0.0), (r.clone(), value(b))], b.color.filled());
            bar.set_margin(0, 0, 4, 4);
            chart.draw_series([bar])?;
            // The whole column, so that even an empty bucket has its tooltip.
            let top_left = chart.backend_coord(&(l, yr.end));
            let bottom_right = chart.backend_coord(&(r, yr.start));
            tips.rect(top_left, bottom_right, &b.tip);
        }
        Ok(tips)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(x: f64, y: Option<f64>) -> Point {
        Point {
            x,
            y,
            tip: "<tip>".to_owned(),
        }
    }

    /// One line series, no target, no bands.
    fn line_chart(points: Vec<Point>) -> XyChart {
        XyChart {
            title: "t".to_owned(),
            x_label: "x".to_owned(),
            y_label: "y".to_owned(),
            series: vec![Series {
                name: "s".to_owned(),
                color: BLACK,
                style: Style::Line,
                points,
            }],
            right: None,
            target: None,
            bands: Vec::new(),
        }
    }

    #[test]
    fn gaps_and_nan_never_reach_coordinates() {
        let chart = XyChart {
            target: Some((f64::NAN, "nan".to_owned())),
            bands: vec![(1.0, "<b>".to_owned()), (f64::NAN, "x".to_owned())],
            ..line_chart(vec![
                pt(1.0, Some(1.0)),
                pt(2.0, Some(f64::NAN)),
                pt(3.0, Some(2.0)),
                pt(f64::INFINITY, Some(3.0)),
                pt(4.0, None),
            ])
        };
        let svg = xy_chart(&chart);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
        // Two runs of one point each: NaN, infinity and None break the line.
        assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
        assert_eq!(svg.matches("<title>").count(), 1, "{svg}");
    }

    #[test]
    fn one_bar_and_one_point_still_make_charts() {
        let bars = BarChart {
            title: "t".to_owned(),
            x_label: "x".to_owned(),
            y_label: "y".to_owned(),
            bars: vec![Bar {
                label: "0.064".to_owned(),
                value: f64::NAN,
                color: BLACK,
                tip: "only".to_owned(),
            }],
            legend: Vec::new(),
        };
        let svg = bar_chart(&bars);
        assert!(svg.contains("<svg") && svg.contains("0.064"), "{svg}");
        let tip = svg.split("<rect class=\"tip\"").nth(1).unwrap_or_default();
        assert!(!tip.is_empty() && !tip.contains("width=\"0\""), "{svg}");
        assert_eq!(svg.matches("<title>only</title>").count(), 1, "{svg}");
        let svg = xy_chart(&line_chart(vec![pt(0.0, Some(0.0))]));
        assert!(svg.contains("<svg") && !svg.contains("NaN"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 1, "{svg}");
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick(&100_000.0), "100k");
        assert_eq!(tick(&2_500_000.0), "2.5M");
        assert_eq!(tick(&0.4), "0.4");
        assert_eq!(tick(&-0.0), "0");
        assert_eq!(range([f64::NAN, f64::INFINITY].into_iter(), None), 0.0..1.0);
        assert_eq!(range([10.0].into_iter(), Some(15.0)), 0.0..15.75);
    }
}
