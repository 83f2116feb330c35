//! Axis and colour helpers shared by the charts: log/linear value mapping,
//! padded ranges, tick placement, number labels, the series palette and the
//! heatmap colour scale, and legend placement. May import nothing from the
//! rest of the crate.
//!
//! Every axis is a linear `f64` axis with explicit ticks; a log axis
//! plots `log10(v)` and labels tick `t` as `10^t`, so all charts share one
//! coordinate type.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;

/// The coordinate type of every chart axis: linear over `range`, with
/// bold ticks (and grid lines) exactly at `ticks` and no light grid.
pub(crate) struct Axis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

/// Builds an axis over `range` (plot space) with ticks at `ticks`.
pub(crate) fn axis(range: (f64, f64), ticks: Vec<f64>) -> Axis {
    Axis {
        range: range.0..range.1,
        ticks,
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let frac = if span == 0.0 {
            0.5
        } else {
            (v - self.range.start) / span
        };
        let pixels = (limit.1 - limit.0) as f64 * frac.clamp(-10.0, 10.0);
        limit.0 + (pixels + 1e-3).floor() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        self.ticks.clone()
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// Tableau 10: distinct, colour-blind-friendly series colours.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Colour of the `i`-th series (cycles after 10).
pub(crate) fn series_colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// Viridis, sampled at 5 anchors and interpolated linearly; `t` in [0, 1].
pub(crate) fn viridis(t: f64) -> RGBColor {
    const ANCHORS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (ANCHORS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(ANCHORS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (ANCHORS[i], ANCHORS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// The legend corner with the fewest points near it (fractions of range).
pub(crate) fn legend_corner(fracs: impl Iterator<Item = (f64, f64)>) -> SeriesLabelPosition {
    let mut counts = [0usize; 4]; // UR, UL, LR, LL
    for (fx, fy) in fracs {
        let (right, left) = (fx > 0.6, fx < 0.4);
        let (up, down) = (fy > 0.6, fy < 0.4);
        counts[0] += (right && up) as usize;
        counts[1] += (left && up) as usize;
        counts[2] += (right && down) as usize;
        counts[3] += (left && down) as usize;
    }
    let best = (0..4).min_by_key(|i| counts[*i]).expect("four corners");
    match best {
        0 => SeriesLabelPosition::UpperRight,
        1 => SeriesLabelPosition::UpperLeft,
        2 => SeriesLabelPosition::LowerRight,
        _ => SeriesLabelPosition::LowerLeft,
    }
}

/// Position of `v` within `(lo, hi)` as a fraction.
pub(crate) fn frac(v: f64, (lo, hi): (f64, f64)) -> f64 {
    (v - lo) / (hi - lo)
}

/// Text style for chart labels (the SVG backend only names the family).
pub(crate) fn font(size: u32) -> TextStyle<'static> {
    ("sans-serif", size).into_font().into()
}

/// Maps data values to plot space and plot-space ticks back to labels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scale {
    pub log: bool,
}

impl Scale {
    /// The plot-space value, or `None` for NaN/inf (and `v <= 0` on log).
    pub fn to_plot(self, v: f64) -> Option<f64> {
        match (self.log, v.is_finite()) {
            (_, false) => None,
            (true, true) if v > 0.0 => Some(v.log10()),
            (true, true) => None,
            (false, true) => Some(v),
        }
    }

    /// The label shown at plot-space tick `t`.
    pub fn label(self, t: f64) -> String {
        if self.log {
            format_num(10f64.powf(t))
        } else {
            format_num(t)
        }
    }

    /// Tick positions (plot space) for the plot-space range `[lo, hi]`.
    pub fn ticks(self, lo: f64, hi: f64) -> Vec<f64> {
        if self.log {
            log_ticks(lo, hi)
        } else {
            nice_ticks(lo, hi, 6)
        }
    }
}

/// Pads a finite data extent `[lo, hi]` (plot space) so marks do not sit
/// on the frame; a zero-width extent (one point, constant series) is
/// widened to a visible range.
pub(crate) fn padded_range(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if hi > lo {
        let pad = 0.05 * (hi - lo);
        return (lo - pad, hi + pad);
    }
    let pad = match (log, lo == 0.0) {
        (true, _) => 0.5,
        (false, true) => 1.0,
        (false, false) => 0.1 * lo.abs(),
    };
    (lo - pad, hi + pad)
}

/// Ticks at multiples of 1, 2 or 5 × 10^k, about `target` of them.
pub(crate) fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || span.is_infinite() {
        return vec![lo];
    }
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    // k·step, not repeated addition, so labels carry no rounding drift.
    (first..=last).map(|k| k as f64 * step).collect()
}

/// Log-space ticks: whole decades, or 1-2-5 within decades when the range
/// spans little more than one decade, or linear log-space ticks below that.
pub(crate) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let decades = hi - lo;
    if decades >= 2.0 {
        let stride = (decades / 8.0).ceil().max(1.0) as i64;
        let first = lo.ceil() as i64;
        return (first..=hi.floor() as i64)
            .filter(|k| k.rem_euclid(stride) == 0)
            .map(|k| k as f64)
            .collect();
    }
    if decades >= 0.7 {
        let mut ticks = Vec::new();
        for k in (lo.floor() as i64)..=(hi.ceil() as i64) {
            for m in [1.0f64, 2.0, 5.0] {
                let t = k as f64 + m.log10();
                if t >= lo && t <= hi {
                    ticks.push(t);
                }
            }
        }
        return ticks;
    }
    // Under a decade: evenly spaced values, placed at their logarithms.
    let (a, b) = (10f64.powf(lo), 10f64.powf(hi));
    nice_ticks(a, b, 5)
        .into_iter()
        .filter(|v| *v > 0.0)
        .map(f64::log10)
        .collect()
}

/// Compact number label: up to 4 significant digits, scientific notation
/// outside [1e-3, 1e5), no trailing zeros.
pub(crate) fn format_num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() {
            "0".into()
        } else {
            v.to_string()
        };
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.2e}");
        let (mant, exp) = s.split_once('e').expect("`{:e}` always has an e");
        return format!("{}e{exp}", trim_zeros(mant));
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    trim_zeros(&format!("{v:.decimals$}"))
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_are_round_and_inside() {
        let t = nice_ticks(-0.05, 1.05, 6);
        let labels: Vec<String> = t.iter().map(|v| format_num(*v)).collect();
        assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert!(t.iter().all(|v| (-0.05..=1.05).contains(v)));
    }

    #[test]
    fn log_ticks_cover_decades() {
        assert_eq!(log_ticks(-3.2, 0.1), vec![-3.0, -2.0, -1.0, 0.0]);
        assert!(log_ticks(0.0, 1.0).len() >= 3);
        assert!(!log_ticks(0.1, 0.3).is_empty());
    }

    #[test]
    fn format_num_is_compact() {
        assert_eq!(format_num(0.5), "0.5");
        assert_eq!(format_num(100.0), "100");
        assert_eq!(format_num(1e-5), "1e-5");
        assert_eq!(format_num(123456.0), "1.23e5");
        assert_eq!(format_num(-0.25), "-0.25");
    }

    #[test]
    fn padded_range_widens_degenerate_extent() {
        assert_eq!(padded_range(0.0, 0.0, false), (-1.0, 1.0));
        let (lo, hi) = padded_range(3.0, 3.0, false);
        assert!(lo < 3.0 && hi > 3.0);
        assert_eq!(padded_range(1.0, 1.0, true), (0.5, 1.5));
    }

    #[test]
    fn legend_avoids_crowded_corner() {
        let rising = (0..10).map(|i| (i as f64 / 9.0, i as f64 / 9.0));
        assert!(matches!(
            legend_corner(rising),
            SeriesLabelPosition::UpperLeft
        ));
    }

    #[test]
    fn viridis_ends() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(f64::NAN), RGBColor(68, 1, 84));
    }
}
