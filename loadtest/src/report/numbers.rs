//! Number formatting shared by the summary and the HTML page: every value that
//! is absent or not a finite number prints as "n/a", never as NaN or inf.

use super::Percentiles;

/// Printed for every figure that was not measured.
pub(super) const NA: &str = "n/a";

/// `v` with `decimals` decimals, or "n/a" when it is not a finite number.
pub(super) fn num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        NA.to_owned()
    }
}

/// `v` with its unit, or "n/a" when absent or not finite.
pub(super) fn qty(v: Option<f64>, decimals: usize, unit: &str) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$} {unit}"),
        _ => NA.to_owned(),
    }
}

/// An integer with thousands separators.
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let len = digits.len();
    let mut out = String::with_capacity(len + len / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (len - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A non-negative rate rounded to an integer with separators.
pub(super) fn rate(v: f64) -> String {
    if v.is_finite() && v >= 0.0 {
        // Saturating float-to-int cast: absurd rates print as u64::MAX, never panic.
        count(v.round() as u64)
    } else {
        num(v, 0)
    }
}

/// A ratio as a percentage with 3 decimals.
pub(super) fn pct(ratio: f64) -> String {
    qty(Some(ratio * 100.0), 3, "%")
}

/// A loss ratio as a percentage with 3 decimals, never negative: a ratio at or
/// below zero (more frames than expected, or a rounding `-0.0`) is "0.000 %";
/// "n/a" when not a finite number.
pub(super) fn loss_pct(ratio: f64) -> String {
    if !ratio.is_finite() {
        return NA.to_owned();
    }
    pct(if ratio <= 0.0 { 0.0 } else { ratio })
}

/// "a / b / c unit"; "n/a" when every value is absent.
pub(super) fn list(values: &[Option<f64>], decimals: usize, unit: &str) -> String {
    if values.iter().all(|v| !v.is_some_and(f64::is_finite)) {
        return NA.to_owned();
    }
    let parts: Vec<String> = values
        .iter()
        .map(|v| v.map_or_else(|| NA.to_owned(), |v| num(v, decimals)))
        .collect();
    format!("{} {unit}", parts.join(" / "))
}

/// Values of a distribution in ms, "n/a" without samples.
pub(super) fn dist(p: &Percentiles, values: &[f64], decimals: usize) -> String {
    if p.count == 0 {
        return NA.to_owned();
    }
    let values: Vec<Option<f64>> = values.iter().copied().map(Some).collect();
    list(&values, decimals, "ms")
}

/// A latency or bucket bound in ms, compactly (3 significant digits or so).
pub(super) fn ms_label(v: f64) -> String {
    let decimals = match v.abs() {
        a if a < 1.0 => 3,
        a if a < 10.0 => 2,
        a if a < 100.0 => 1,
        _ => 0,
    };
    num(v, decimals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_never_shown_negative() {
        for ratio in [-0.0, -1e-9, -0.25, 0.0] {
            assert_eq!(loss_pct(ratio), "0.000 %", "{ratio}");
        }
        assert_eq!(loss_pct(0.000_08), "0.008 %");
        assert_eq!(loss_pct(f64::NAN), NA);
        assert_eq!(loss_pct(f64::INFINITY), NA);
        assert_eq!(loss_pct(f64::NEG_INFINITY), NA);
    }
}
