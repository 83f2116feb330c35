//! Grouped bar charts (e.g. P(noise) and P(answer) per truncation variant),
//! rendered to a standalone SVG string. May import nothing from the rest of
//! the crate.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{axis, font, format_num, frac, legend_corner, series_colour, Scale};
use super::plot::{draw_legend, render_svg, y_range_plot, ChartSpec};
use super::ReportError;

/// One bar per category, e.g. P(answer) for every truncation variant.
#[derive(Clone, Debug, PartialEq)]
pub struct BarGroup {
    /// Legend entry.
    pub name: String,
    /// One value per category label; NaN/inf values draw no bar.
    pub values: Vec<f64>,
}

/// Grouped bars: one cluster per label, one coloured bar per group, value
/// printed above each bar when there are at most 40 bars. Bars start at 0,
/// so log axes are rejected with `InvalidInput`.
pub fn bar_chart(
    spec: &ChartSpec,
    labels: &[String],
    groups: &[BarGroup],
) -> Result<String, ReportError> {
    if spec.log_x || spec.log_y {
        return Err(ReportError::chart_input(
            &spec.title,
            "bar charts have no log axes",
        ));
    }
    for g in groups {
        if g.values.len() != labels.len() {
            let msg = format!(
                "group `{}` has {} values, expected one per label ({})",
                g.name,
                g.values.len(),
                labels.len()
            );
            return Err(ReportError::chart_input(&spec.title, msg));
        }
    }
    let values = || {
        groups
            .iter()
            .flat_map(|g| &g.values)
            .filter(|v| v.is_finite())
    };
    if values().next().is_none() {
        return Err(ReportError::NoData {
            title: spec.title.clone(),
        });
    }
    let lo = values().fold(0.0f64, |a, v| a.min(*v));
    let hi = values().fold(0.0f64, |a, v| a.max(*v));
    let span = if hi > lo { hi - lo } else { 1.0 };
    let pad_lo = if lo < 0.0 { 0.1 * span } else { 0.0 };
    let yr = y_range_plot(spec, Scale { log: false })?.unwrap_or((lo - pad_lo, hi + 0.12 * span));
    let n = labels.len();
    let xr = (0.0, n as f64);
    let x_ticks = (0..n).map(|i| i as f64 + 0.5).collect();
    let width = 0.8 / groups.len() as f64;
    let bars: Vec<(usize, f64, f64)> = groups
        .iter()
        .enumerate()
        .flat_map(|(j, g)| {
            g.values
                .iter()
                .enumerate()
                .map(move |(i, v)| (j, i as f64, *v))
        })
        .filter(|(_, _, v)| v.is_finite())
        .map(|(j, i, v)| (j, i + 0.1 + j as f64 * width, v.clamp(yr.0, yr.1)))
        .collect();
    let tops = bars.iter().map(|(_, x, v)| (frac(*x, xr), frac(*v, yr)));
    let corner = legend_corner(tops);

    render_svg(spec, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&spec.title, font(20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                axis(xr, x_ticks),
                axis(yr, Scale { log: false }.ticks(yr.0, yr.1)),
            )?;
        let label_of = |v: &f64| {
            let i = (v - 0.5).round();
            labels
                .get(i as usize)
                .filter(|_| i >= 0.0)
                .cloned()
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(spec.x_label.as_str())
            .y_desc(spec.y_label.as_str())
            .x_label_formatter(&label_of)
            .y_label_formatter(&|v| format_num(*v))
            .label_style(font(12))
            .axis_desc_style(font(14))
            .bold_line_style(BLACK.mix(0.12))
            .draw()?;
        let base = 0.0f64.clamp(yr.0, yr.1);
        for (j, g) in groups.iter().enumerate() {
            let colour = series_colour(j);
            let rects = bars
                .iter()
                .filter(|b| b.0 == j)
                .map(|&(_, x, v)| Rectangle::new([(x, base), (x + width, v)], colour.filled()));
            chart
                .draw_series(rects)?
                .label(g.name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x - 6, y - 5), (x + 6, y + 5)], colour.filled())
                });
        }
        if bars.len() <= 40 {
            let style = font(11).pos(Pos::new(HPos::Center, VPos::Bottom));
            let texts = bars
                .iter()
                .map(|&(_, x, v)| Text::new(format_num(v), (x + width / 2.0, v), style.clone()));
            chart.draw_series(texts)?;
        }
        draw_legend(&mut chart, corner)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::plot::tests::assert_svg_doc;

    fn spec(title: &str) -> ChartSpec {
        ChartSpec::new(title, "variant", "probability")
    }

    #[test]
    fn bar_chart_groups_and_checks_lengths() {
        let labels: Vec<String> = ["base", "rank 10%", "rank 1%"].map(String::from).to_vec();
        let groups = vec![
            BarGroup {
                name: "P(noise)".into(),
                values: vec![0.6, 0.3, f64::NAN],
            },
            BarGroup {
                name: "P(answer)".into(),
                values: vec![0.2, 0.5, 0.7],
            },
        ];
        let svg = bar_chart(&spec("truncation"), &labels, &groups).unwrap();
        assert_svg_doc(
            &svg,
            &["truncation", "P(noise)", "P(answer)", "rank 10%", "0.7"],
        );
        assert!(svg.matches("<rect").count() >= 5);
        let bad = vec![BarGroup {
            name: "short".into(),
            values: vec![1.0],
        }];
        let err = bar_chart(&spec("t"), &labels, &bad).unwrap_err();
        assert!(err.to_string().contains("short"), "{err}");
        assert!(matches!(
            bar_chart(&spec("t"), &labels, &[]),
            Err(ReportError::NoData { .. })
        ));
    }

    #[test]
    fn bar_chart_rejects_log_axes_and_honours_y_range() {
        let labels = vec!["a".to_string()];
        let groups = [BarGroup {
            name: "g".into(),
            values: vec![2.0],
        }];
        let mut sp = spec("log bars");
        sp.log_y = true;
        assert!(matches!(
            bar_chart(&sp, &labels, &groups),
            Err(ReportError::InvalidInput { .. })
        ));
        sp.log_y = false;
        sp.y_range = Some((0.0, 1.0));
        assert_svg_doc(
            &bar_chart(&sp, &labels, &groups).unwrap(),
            &["log bars", "\n1\n"],
        );
    }
}
