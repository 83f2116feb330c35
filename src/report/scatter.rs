//! Scatter charts: one coloured point cloud per named group (e.g. 2-D latent
//! projections coloured by rule), rendered to a standalone SVG string. May
//! import nothing from the rest of the crate.

use plotters::prelude::*;

use super::axis::{axis, font, frac, legend_corner, padded_range, series_colour, Scale};
use super::plot::{draw_legend, render_svg, ChartSpec, Series};
use super::ReportError;

/// Points of each series as small filled circles, no lines; a legend with
/// one entry per series. Log axes are not supported (`InvalidInput`); no
/// finite point at all is `NoData`.
pub fn scatter_chart(spec: &ChartSpec, series: &[Series]) -> Result<String, ReportError> {
    if spec.log_x || spec.log_y {
        return Err(ReportError::chart_input(&spec.title, "scatter charts have no log axes"));
    }
    let finite: Vec<(f64, f64)> = series.iter().flat_map(|s| &s.points).filter(|p| p.0.is_finite() && p.1.is_finite()).copied().collect();
    if finite.is_empty() {
        return Err(ReportError::NoData { title: spec.title.clone() });
    }
    let ext = |f: fn(&(f64, f64)) -> f64| finite.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (x_lo, x_hi) = ext(|p| p.0);
    let (y_lo, y_hi) = ext(|p| p.1);
    let lin = Scale { log: false };
    let xr = padded_range(x_lo, x_hi, false);
    let yr = spec.y_range.unwrap_or_else(|| padded_range(y_lo, y_hi, false));
    let corner = legend_corner(finite.iter().map(|p| (frac(p.0, xr), frac(p.1, yr))));
    render_svg(spec, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&spec.title, font(20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(axis(xr, lin.ticks(xr.0, xr.1)), axis(yr, lin.ticks(yr.0, yr.1)))?;
        chart
            .configure_mesh()
            .x_desc(spec.x_label.as_str())
            .y_desc(spec.y_label.as_str())
            .x_label_formatter(&|v| lin.label(*v))
            .y_label_formatter(&|v| lin.label(*v))
            .label_style(font(12))
            .axis_desc_style(font(14))
            .bold_line_style(BLACK.mix(0.12))
            .draw()?;
        for (i, s) in series.iter().enumerate() {
            let colour = s.style.as_ref().and_then(|st| st.colour).map_or(series_colour(i), |(r, g, b)| RGBColor(r, g, b));
            let pts = s.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).map(|p| {
                let y = spec.y_range.map_or(p.1, |(lo, hi)| p.1.clamp(lo, hi));
                Circle::new((p.0, y), 2, colour.mix(0.7).filled())
            });
            chart
                .draw_series(pts)?
                .label(s.name.as_str())
                .legend(move |(x, y)| Circle::new((x + 2, y), 4, colour.filled()));
        }
        if series.iter().all(|s| s.name.is_empty()) {
            return Ok(());
        }
        draw_legend(&mut chart, corner)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_circle_per_point_and_rejects_empty_input() {
        let s = vec![Series::new("a", vec![(0.0, 1.0), (1.0, 2.0)]), Series::new("b", vec![(3.0, -1.0)])];
        let svg = scatter_chart(&ChartSpec::new("t", "x", "y"), &s).unwrap();
        assert!(svg.matches("<circle").count() >= 3, "{svg}");
        assert!(svg.contains("<text"));
        let empty = vec![Series::new("a", vec![(f64::NAN, 1.0)])];
        assert!(matches!(scatter_chart(&ChartSpec::new("t", "x", "y"), &empty), Err(ReportError::NoData { .. })));
    }
}
