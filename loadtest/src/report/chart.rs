//! Charts for the HTML report: an x/y chart (lines, dots, a strip of markers for
//! values that could not be measured, an optional right-hand axis, an optional
//! target line, hover bands) and a bar chart. Every chart has a title, axes with
//! tick labels, axis labels with units, a legend and `<title>` tooltips.
//! Non-finite values are never drawn, and a chart without data becomes a
//! "no data" note.

use super::svg::{
    Axis, BAR_BOTTOM, BOTTOM, Frame, H, LEFT, MISSING_STRIP, RIGHT, RIGHT_AXIS, TOP, W, c, escape,
    legend, no_data, open, x_axis_line, y_axis,
};

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
    /// CSS colour.
    pub(super) color: &'static str,
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
    /// CSS colour.
    pub(super) color: &'static str,
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
    pub(super) legend: Vec<(String, &'static str)>,
}

fn finite_ys(s: &Series) -> impl Iterator<Item = f64> + '_ {
    s.points
        .iter()
        .filter_map(|p| p.y)
        .filter(|y| y.is_finite())
}

/// The y axis of `series`: from 0 (or below) to the largest value, stretched to
/// show `target` when that is at most twice the largest value.
fn y_axis_for(series: &[&Series], target: Option<f64>) -> Axis {
    let ys = || series.iter().flat_map(|s| finite_ys(s));
    let max = ys().fold(0.0, f64::max);
    let max = match target {
        Some(t) if t > max && t <= 2.0 * max => t,
        _ => max,
    };
    Axis::nice(ys().fold(0.0, f64::min), max)
}

/// Renders an x/y chart, or "no data" when no point has a finite x.
pub(super) fn xy_chart(ch: &XyChart) -> String {
    let all = || ch.series.iter().chain(ch.right.as_ref().map(|(_, s)| s));
    let xs: Vec<f64> = all()
        .flat_map(|s| s.points.iter().map(|p| p.x))
        .filter(|x| x.is_finite())
        .collect();
    if xs.is_empty() {
        return no_data(&ch.title);
    }
    let xmin = xs.iter().copied().fold(0.0, f64::min);
    let xa = Axis::nice(xmin, xs.iter().copied().fold(xmin, f64::max));
    let ya = y_axis_for(
        &ch.series.iter().collect::<Vec<_>>(),
        ch.target.as_ref().map(|(t, _)| *t),
    );
    // Values that could not be measured get a strip of their own above the plot.
    let missing = ch
        .series
        .iter()
        .find(|s| s.style == Style::Missing && !s.points.is_empty());
    let f = Frame {
        left: LEFT,
        right: W - if ch.right.is_some() {
            RIGHT_AXIS
        } else {
            RIGHT
        },
        top: TOP
            + if missing.is_some() {
                MISSING_STRIP
            } else {
                0.0
            },
        bottom: H - BOTTOM,
    };
    let mut out = open(&ch.title);
    y_axis(&mut out, ya, f, false, &ch.y_label);
    if let Some(s) = missing {
        out.push_str(&format!(
            "<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            c(f.left - 6.0),
            c(f.top - MISSING_STRIP / 2.0 + 4.0),
            escape(&s.name)
        ));
    }
    for t in xa.ticks() {
        let x = c(xa.map(t, f.left, f.right));
        out.push_str(&format!(
            "<line class=\"axis\" x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\"/>\
             <text class=\"tick\" x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            c(f.bottom),
            c(f.bottom + 5.0),
            c(f.bottom + 18.0),
            xa.label(t)
        ));
    }
    x_axis_line(&mut out, f, &ch.x_label);
    if let Some((v, label)) = ch
        .target
        .as_ref()
        .filter(|(v, _)| *v >= ya.lo && *v <= ya.hi)
    {
        let y = c(ya.map(*v, f.bottom, f.top));
        out.push_str(&format!(
            "<line class=\"target\" x1=\"{}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\"/>\
             <text class=\"tick\" x=\"{}\" y=\"{y}\" dy=\"-4\" text-anchor=\"end\">{}</text>",
            c(f.left),
            c(f.right),
            c(f.right - 4.0),
            escape(label)
        ));
    }
    for s in &ch.series {
        draw_series(&mut out, s, xa, ya, f);
    }
    if let Some((label, s)) = &ch.right {
        let ra = y_axis_for(&[s], None);
        y_axis(&mut out, ra, f, true, label);
        draw_series(&mut out, s, xa, ra, f);
    }
    hover_bands(&mut out, &ch.bands, xa, f);
    let items: Vec<(&str, &str)> = all().map(|s| (s.name.as_str(), s.color)).collect();
    legend(&mut out, &items, f);
    out.push_str("</svg>\n");
    out
}

fn draw_series(out: &mut String, s: &Series, xa: Axis, ya: Axis, f: Frame) {
    let color = s.color;
    let px = |p: &Point| {
        let y = p.y.filter(|y| y.is_finite())?;
        p.x.is_finite()
            .then(|| (xa.map(p.x, f.left, f.right), ya.map(y, f.bottom, f.top)))
    };
    match s.style {
        Style::Line | Style::Dashed => {
            let dash = if s.style == Style::Dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            };
            let mut d = String::new();
            let mut run: Vec<(f64, f64)> = Vec::new();
            let mut flush = |run: &mut Vec<(f64, f64)>, d: &mut String| {
                match run.as_slice() {
                    [] => {}
                    [(x, y)] => out.push_str(&format!(
                        "<circle cx=\"{}\" cy=\"{}\" r=\"2\" fill=\"{color}\"/>",
                        c(*x),
                        c(*y)
                    )),
                    points => {
                        for (i, (x, y)) in points.iter().enumerate() {
                            let cmd = if i == 0 { 'M' } else { 'L' };
                            d.push_str(&format!("{cmd}{} {} ", c(*x), c(*y)));
                        }
                    }
                }
                run.clear();
            };
            for p in &s.points {
                match px(p) {
                    Some(xy) => run.push(xy),
                    None => flush(&mut run, &mut d),
                }
            }
            flush(&mut run, &mut d);
            if !d.is_empty() {
                out.push_str(&format!(
                    "<path d=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\"{dash}/>",
                    d.trim_end()
                ));
            }
        }
        Style::Dots => {
            for (p, (x, y)) in s.points.iter().filter_map(|p| Some((p, px(p)?))) {
                out.push_str(&format!(
                    "<circle cx=\"{}\" cy=\"{}\" r=\"4\" fill=\"{color}\"><title>{}</title></circle>",
                    c(x),
                    c(y),
                    escape(&p.tip)
                ));
            }
        }
        Style::Missing => {
            for p in s.points.iter().filter(|p| p.x.is_finite()) {
                let (x, y) = (xa.map(p.x, f.left, f.right), f.top - MISSING_STRIP / 2.0);
                out.push_str(&format!(
                    "<path d=\"M{} {} L{} {} M{} {} L{} {}\" stroke=\"{color}\" \
                     stroke-width=\"2.5\"><title>{}</title></path>",
                    c(x - 5.0),
                    c(y - 5.0),
                    c(x + 5.0),
                    c(y + 5.0),
                    c(x - 5.0),
                    c(y + 5.0),
                    c(x + 5.0),
                    c(y - 5.0),
                    escape(&p.tip)
                ));
            }
        }
    }
}

/// Transparent full-height bands around each x, each with a tooltip.
fn hover_bands(out: &mut String, bands: &[(f64, String)], xa: Axis, f: Frame) {
    let mut xs: Vec<(f64, &str)> = bands
        .iter()
        .filter(|(x, _)| x.is_finite())
        .map(|(x, tip)| (xa.map(*x, f.left, f.right), tip.as_str()))
        .collect();
    xs.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (i, (x, tip)) in xs.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|j| xs.get(j));
        let next = xs.get(i + 1);
        let l = prev.map_or(f.left, |p| (p.0 + x) / 2.0).max(f.left);
        let r = next.map_or(f.right, |n| (n.0 + x) / 2.0).min(f.right);
        out.push_str(&format!(
            "<rect class=\"band\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{}</title></rect>",
            c(l),
            c(f.top),
            c((r - l).max(0.0)),
            c(f.bottom - f.top),
            escape(tip)
        ));
    }
}

/// Renders a bar chart, or "no data" without bars.
pub(super) fn bar_chart(ch: &BarChart) -> String {
    if ch.bars.is_empty() {
        return no_data(&ch.title);
    }
    let value = |b: &Bar| if b.value.is_finite() { b.value } else { 0.0 };
    let max = ch.bars.iter().map(value).fold(0.0, f64::max);
    let ya = Axis::nice(0.0, max);
    let f = Frame {
        left: LEFT,
        right: W - RIGHT,
        top: TOP,
        bottom: H - BAR_BOTTOM,
    };
    let mut out = open(&ch.title);
    y_axis(&mut out, ya, f, false, &ch.y_label);
    let slot = (f.right - f.left) / ch.bars.len() as f64;
    for (i, b) in ch.bars.iter().enumerate() {
        let x = f.left + slot * i as f64;
        let y = ya.map(value(b).max(0.0), f.bottom, f.top);
        let (lx, ly) = (x + slot / 2.0, f.bottom + 12.0);
        out.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}</title></rect>\
             <text class=\"tick\" x=\"{lx}\" y=\"{ly}\" text-anchor=\"end\" \
             transform=\"rotate(-45 {lx} {ly})\">{}</text>",
            c(x + slot * 0.1),
            c(y),
            c(slot * 0.8),
            c((f.bottom - y).max(0.0)),
            b.color,
            escape(&b.tip),
            escape(&b.label),
            lx = c(lx),
            ly = c(ly)
        ));
    }
    x_axis_line(&mut out, f, &ch.x_label);
    let items: Vec<(&str, &str)> = ch.legend.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    legend(&mut out, &items, f);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_nan_never_reach_coordinates() {
        let pt = |x: f64, y: Option<f64>| Point {
            x,
            y,
            tip: "<tip>".to_owned(),
        };
        let chart = XyChart {
            title: "t".to_owned(),
            x_label: "x".to_owned(),
            y_label: "y".to_owned(),
            series: vec![Series {
                name: "s".to_owned(),
                color: "#000",
                style: Style::Line,
                points: vec![
                    pt(1.0, Some(1.0)),
                    pt(2.0, Some(f64::NAN)),
                    pt(3.0, Some(2.0)),
                    pt(f64::INFINITY, Some(3.0)),
                    pt(4.0, None),
                ],
            }],
            right: None,
            target: Some((f64::NAN, "nan".to_owned())),
            bands: vec![(1.0, "<b>".to_owned()), (f64::NAN, "x".to_owned())],
        };
        let svg = xy_chart(&chart);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
    }
}
