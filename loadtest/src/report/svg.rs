//! SVG primitives for the HTML report's charts: the canvas, "nice" linear axes,
//! legends and escaping. Coordinates go through [`c`], which never prints NaN.

/// Canvas size (the page scales it).
pub(super) const W: f64 = 720.0;
pub(super) const H: f64 = 320.0;
/// Plot-area margins.
pub(super) const LEFT: f64 = 70.0;
pub(super) const RIGHT: f64 = 24.0;
pub(super) const RIGHT_AXIS: f64 = 70.0;
pub(super) const TOP: f64 = 56.0;
pub(super) const BOTTOM: f64 = 50.0;
pub(super) const BAR_BOTTOM: f64 = 74.0;
/// Height of the strip above the plot for values that could not be measured.
pub(super) const MISSING_STRIP: f64 = 24.0;

/// Escapes `s` for HTML and SVG text and attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// A coordinate: never NaN or infinite.
pub(super) fn c(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "0".to_owned()
    }
}

/// A "nice" linear axis: round bounds and a 1/2/5 × 10ⁿ step.
#[derive(Debug, Clone, Copy)]
pub(super) struct Axis {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) step: f64,
}

impl Axis {
    pub(super) fn nice(lo: f64, hi: f64) -> Axis {
        let fallback = Axis {
            lo: 0.0,
            hi: 1.0,
            step: 0.2,
        };
        if !lo.is_finite() || !hi.is_finite() {
            return fallback;
        }
        let hi = if hi > lo { hi } else { lo + 1.0 };
        let step = nice_step((hi - lo) / 5.0);
        let axis = Axis {
            lo: (lo / step).floor() * step,
            hi: (hi / step).ceil() * step,
            step,
        };
        let ok = [axis.lo, axis.hi, axis.step].iter().all(|v| v.is_finite());
        if ok && axis.hi > axis.lo {
            axis
        } else {
            fallback
        }
    }

    pub(super) fn ticks(self) -> impl Iterator<Item = f64> {
        let n = ((self.hi - self.lo) / self.step).round().clamp(0.0, 20.0) as u32;
        (0..=n).map(move |i| self.lo + f64::from(i) * self.step)
    }

    /// `v` in pixels, `a` at `lo` and `b` at `hi`.
    pub(super) fn map(self, v: f64, a: f64, b: f64) -> f64 {
        a + (v - self.lo) / (self.hi - self.lo) * (b - a)
    }

    pub(super) fn label(self, v: f64) -> String {
        let big = self.hi.abs().max(self.lo.abs());
        let (div, suffix) = match big {
            _ if v == 0.0 => return "0".to_owned(),
            b if b >= 1e6 => (1e6, "M"),
            b if b >= 1e4 => (1e3, "k"),
            _ => (1.0, ""),
        };
        let step = self.step / div;
        let decimals = if step >= 1.0 {
            0
        } else {
            ((-step.log10().floor()) as usize).min(6)
        };
        format!("{:.decimals$}{suffix}", v / div)
    }
}

fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let n = match f {
        f if f <= 1.0 => 1.0,
        f if f <= 2.0 => 2.0,
        f if f <= 5.0 => 5.0,
        _ => 10.0,
    };
    n * mag
}

/// The plot area, pixels.
#[derive(Debug, Clone, Copy)]
pub(super) struct Frame {
    pub(super) left: f64,
    pub(super) right: f64,
    pub(super) top: f64,
    pub(super) bottom: f64,
}

/// The note shown instead of a chart without data.
pub(super) fn no_data(title: &str) -> String {
    format!(
        "<div class=\"chart nodata\"><div class=\"ctitle\">{}</div><p>no data</p></div>\n",
        escape(title)
    )
}

pub(super) fn open(title: &str) -> String {
    let t = escape(title);
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\">\
         <text class=\"ctitle\" x=\"{}\" y=\"20\" text-anchor=\"middle\">{t}</text>",
        c(W / 2.0)
    )
}

/// Legend entries in a row above the plot.
pub(super) fn legend(out: &mut String, items: &[(&str, &str)], f: Frame) {
    let mut x = f.left;
    for (name, color) in items {
        out.push_str(&format!(
            "<rect x=\"{}\" y=\"34\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text class=\"tick\" x=\"{}\" y=\"44\">{}</text>",
            c(x),
            c(x + 16.0),
            escape(name)
        ));
        x += 28.0 + 6.5 * name.chars().count() as f64;
    }
}

/// A vertical axis with grid lines (left side) and its label.
pub(super) fn y_axis(out: &mut String, a: Axis, f: Frame, right_side: bool, label: &str) {
    let x = if right_side { f.right } else { f.left };
    let (dx, anchor, lx, rot) = if right_side {
        (6.0, "start", x + 56.0, 90)
    } else {
        (-6.0, "end", x - 56.0, -90)
    };
    for t in a.ticks() {
        let y = a.map(t, f.bottom, f.top);
        if !right_side {
            out.push_str(&format!(
                "<line class=\"grid\" x1=\"{}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\"/>",
                c(f.left),
                c(f.right),
                y = c(y)
            ));
        }
        out.push_str(&format!(
            "<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            c(x + dx),
            c(y + 4.0),
            a.label(t)
        ));
    }
    let my = (f.top + f.bottom) / 2.0;
    out.push_str(&format!(
        "<line class=\"axis\" x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\"/>\
         <text class=\"alabel\" x=\"{lx}\" y=\"{my}\" text-anchor=\"middle\" \
         transform=\"rotate({rot} {lx} {my})\">{}</text>",
        c(f.top),
        c(f.bottom),
        escape(label),
        x = c(x),
        lx = c(lx),
        my = c(my)
    ));
}

/// The horizontal axis line and its label (ticks are drawn by the caller).
pub(super) fn x_axis_line(out: &mut String, f: Frame, label: &str) {
    out.push_str(&format!(
        "<line class=\"axis\" x1=\"{}\" x2=\"{}\" y1=\"{b}\" y2=\"{b}\"/>\
         <text class=\"alabel\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        c(f.left),
        c(f.right),
        c((f.left + f.right) / 2.0),
        c(H - 8.0),
        escape(label),
        b = c(f.bottom)
    ));
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_nice_and_finite() {
        let a = Axis::nice(0.0, 7.3);
        assert_eq!((a.lo, a.hi, a.step), (0.0, 8.0, 2.0));
        let a = Axis::nice(f64::NAN, f64::INFINITY);
        assert_eq!((a.lo, a.hi), (0.0, 1.0));
        let a = Axis::nice(0.0, 0.0);
        assert!(a.hi > a.lo);
        assert_eq!(Axis::nice(0.0, 125_000.0).label(100_000.0), "100k");
        assert_eq!(Axis::nice(0.0, 0.9).label(0.4), "0.4");
        assert_eq!(c(f64::NAN), "0");
    }
}
