//! Heatmaps of a matrix (attention patterns, e.g. 64×64 query × key) with a
//! viridis colour bar, rendered to a standalone SVG string. May import
//! nothing from the rest of the crate.

use plotters::prelude::*;

use super::axis::{axis, font, nice_ticks, padded_range, viridis};
use super::plot::{render_svg, ChartSpec};
use super::ReportError;

/// Colour of NaN/inf cells.
const MISSING: RGBColor = RGBColor(215, 215, 215);

/// At most this many tick labels per axis; longer axes label every k-th.
const MAX_LABELS: usize = 16;

/// Draws `matrix[row][col]` with row 0 at the top, coloured on viridis
/// between `scale = (min, max)` (values outside are clamped; `None` uses the
/// finite data extent). Empty label slices label cells by index; non-empty
/// ones must match the matrix dimensions. `log_x`, `log_y` and `y_range`
/// do not apply and are rejected.
pub fn heatmap(
    spec: &ChartSpec,
    matrix: &[Vec<f64>],
    row_labels: &[String],
    col_labels: &[String],
    scale: Option<(f64, f64)>,
) -> Result<String, ReportError> {
    let bad = |msg: String| Err(ReportError::chart_input(&spec.title, msg));
    if spec.log_x || spec.log_y || spec.y_range.is_some() {
        return bad("heatmaps take no log axes or y_range".into());
    }
    let rows = matrix.len();
    let cols = matrix.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Err(ReportError::NoData {
            title: spec.title.clone(),
        });
    }
    if let Some((r, row)) = matrix.iter().enumerate().find(|(_, r)| r.len() != cols) {
        return bad(format!(
            "row {r} has {} columns, row 0 has {cols}",
            row.len()
        ));
    }
    for (what, labels, n) in [("row", row_labels, rows), ("column", col_labels, cols)] {
        if !labels.is_empty() && labels.len() != n {
            return bad(format!("{} {what} labels for {n} {what}s", labels.len()));
        }
    }
    let (lo, hi) = match scale {
        Some((lo, hi)) if lo.is_finite() && hi.is_finite() && lo < hi => (lo, hi),
        Some((lo, hi)) => {
            return bad(format!(
                "colour scale ({lo}, {hi}) must be finite and increasing"
            ))
        }
        None => {
            let finite = || matrix.iter().flatten().copied().filter(|v| v.is_finite());
            if finite().next().is_none() {
                return Err(ReportError::NoData {
                    title: spec.title.clone(),
                });
            }
            let lo = finite().fold(f64::INFINITY, f64::min);
            let hi = finite().fold(f64::NEG_INFINITY, f64::max);
            if lo < hi {
                (lo, hi)
            } else {
                padded_range(lo, hi, false)
            }
        }
    };
    let colour = |v: f64| {
        if v.is_finite() {
            viridis((v - lo) / (hi - lo))
        } else {
            MISSING
        }
    };

    render_svg(spec, |root| {
        let area = root.titled(&spec.title, font(20))?;
        let (w, _) = area.dim_in_pixel();
        let (main, bar) = area.split_horizontally(w.saturating_sub(90));
        let x_ticks = centre_ticks(cols);
        let y_ticks = centre_ticks(rows).iter().map(|t| rows as f64 - t).collect();
        let mut chart = ChartBuilder::on(&main)
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                axis((0.0, cols as f64), x_ticks),
                axis((0.0, rows as f64), y_ticks),
            )?;
        // Tick at cell centre c + 0.5; rows count down from the top.
        let col_of = |v: &f64| cell_label(col_labels, (v - 0.5).round());
        let row_of = |v: &f64| cell_label(row_labels, (rows as f64 - 0.5 - v).round());
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(spec.x_label.as_str())
            .y_desc(spec.y_label.as_str())
            .x_label_formatter(&col_of)
            .y_label_formatter(&row_of)
            .label_style(font(11))
            .axis_desc_style(font(14))
            .draw()?;
        let cells = matrix.iter().enumerate().flat_map(|(r, row)| {
            let top = (rows - r) as f64;
            colour_runs(row.iter().map(|v| colour(*v)))
                .into_iter()
                .map(move |(c0, c1, rgb)| {
                    Rectangle::new([(c0 as f64, top), (c1 as f64, top - 1.0)], rgb.filled())
                })
        });
        chart.draw_series(cells)?;

        // Colour bar: 64 bands from lo to hi, labelled on the right.
        let mut bar_ticks = nice_ticks(lo, hi, 5);
        for end in [lo, hi] {
            if !bar_ticks.iter().any(|b| (b - end).abs() < 0.08 * (hi - lo)) {
                bar_ticks.push(end);
            }
        }
        let mut cbar = ChartBuilder::on(&bar)
            .margin(8)
            .margin_left(12)
            .x_label_area_size(40)
            .right_y_label_area_size(50)
            .build_cartesian_2d(axis((0.0, 1.0), vec![]), axis((lo, hi), bar_ticks))?;
        cbar.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_label_formatter(&|v| super::axis::format_num(*v))
            .label_style(font(11))
            .draw()?;
        let band = (hi - lo) / 64.0;
        cbar.draw_series((0..64).map(|k| {
            let y = lo + k as f64 * band;
            Rectangle::new(
                [(0.0, y), (1.0, y + band)],
                viridis((k as f64 + 0.5) / 64.0).filled(),
            )
        }))?;
        Ok(())
    })
}

/// Runs of equal colour in one row as `(first col, end col, colour)`: one
/// `<rect>` per run keeps causal patterns (zero above the diagonal) small.
fn colour_runs(colours: impl Iterator<Item = RGBColor>) -> Vec<(usize, usize, RGBColor)> {
    let mut runs: Vec<(usize, usize, RGBColor)> = Vec::new();
    for (c, rgb) in colours.enumerate() {
        match runs.last_mut() {
            Some(run) if run.2 == rgb => run.1 = c + 1,
            _ => runs.push((c, c + 1, rgb)),
        }
    }
    runs
}

/// Cell-centre ticks, thinned to at most `MAX_LABELS`.
fn centre_ticks(n: usize) -> Vec<f64> {
    let stride = n.div_ceil(MAX_LABELS).max(1);
    (0..n).step_by(stride).map(|i| i as f64 + 0.5).collect()
}

fn cell_label(labels: &[String], i: f64) -> String {
    if i < 0.0 {
        return String::new();
    }
    let i = i as usize;
    labels.get(i).cloned().unwrap_or_else(|| i.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::plot::tests::assert_svg_doc;

    fn causal(n: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|q| {
                (0..n)
                    .map(|k| if k <= q { 1.0 / (q + 1) as f64 } else { 0.0 })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn heatmap_draws_one_rect_per_cell() {
        let spec = ChartSpec::new("L0H1 pattern", "key", "query");
        let checker: Vec<Vec<f64>> = (0..64)
            .map(|r| (0..64).map(|c| ((r + c) % 2) as f64).collect())
            .collect();
        let svg = heatmap(&spec, &checker, &[], &[], Some((0.0, 1.0))).unwrap();
        assert_svg_doc(&svg, &["L0H1 pattern", "query", "key"]);
        // 64×64 cells + 64 colour-bar bands (+ backgrounds).
        assert!(svg.matches("<rect").count() >= 64 * 64 + 64);
        assert!(svg.contains("\n60\n"), "thinned index labels");
        assert!(!svg.contains("\n61\n"));
    }

    #[test]
    fn equal_neighbours_share_one_rect() {
        let runs = colour_runs([WHITE, WHITE, BLACK, WHITE].into_iter());
        assert_eq!(runs, [(0, 2, WHITE), (2, 3, BLACK), (3, 4, WHITE)]);
        let spec = ChartSpec::new("causal", "", "");
        let svg = heatmap(&spec, &causal(64), &[], &[], None).unwrap();
        assert!(
            svg.matches("<rect").count() < 64 * 40,
            "upper triangle merged"
        );
    }

    #[test]
    fn heatmap_uses_labels_and_handles_nan_and_constant() {
        let m = vec![vec![0.5, f64::NAN], vec![0.5, 0.5]];
        let names: Vec<String> = ["<bos>", "tok"].map(String::from).to_vec();
        let svg = heatmap(&ChartSpec::new("tiny", "", ""), &m, &names, &names, None).unwrap();
        assert!(svg.contains("&lt;bos&gt;"));
        assert!(
            svg.contains("rgb(215,215,215)") || svg.contains("#D7D7D7"),
            "NaN cell is grey"
        );
    }

    #[test]
    fn heatmap_rejects_bad_shapes() {
        let spec = ChartSpec::new("bad", "", "");
        let ragged = vec![vec![1.0, 2.0], vec![1.0]];
        assert!(matches!(
            heatmap(&spec, &ragged, &[], &[], None),
            Err(ReportError::InvalidInput { .. })
        ));
        let err = heatmap(&spec, &causal(3), &["a".into()], &[], None).unwrap_err();
        assert!(err.to_string().contains("1 row labels for 3 rows"), "{err}");
        assert!(matches!(
            heatmap(&spec, &[], &[], &[], None),
            Err(ReportError::NoData { .. })
        ));
        assert!(heatmap(&spec, &causal(2), &[], &[], Some((1.0, 1.0))).is_err());
    }
}
