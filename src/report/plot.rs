//! Line and singular-value spectrum charts (plus the rendering helpers
//! shared with `bar` and `heatmap`), each rendered to a
//! standalone SVG document string with `plotters`. May import nothing from
//! the rest of the crate.
//!
//! An empty series list, or series without a single finite point, is the
//! error `ReportError::NoData` rather than a blank chart: a blank figure in
//! a report hides the bug that produced it.

use std::error::Error;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{axis, font, frac, legend_corner, padded_range, series_colour, Scale};
use super::ReportError;

/// Size, titles and axis options shared by every chart.
#[derive(Clone, Debug, PartialEq)]
pub struct ChartSpec {
    /// Caption drawn above the plot. Default: empty.
    pub title: String,
    /// Horizontal axis description. Default: empty.
    pub x_label: String,
    /// Vertical axis description. Default: empty.
    pub y_label: String,
    /// Logarithmic x axis; points with `x <= 0` are skipped. Default: false.
    pub log_x: bool,
    /// Logarithmic y axis; points with `y <= 0` are skipped. Default: false.
    pub log_y: bool,
    /// Fixed y range in data units; values outside it are drawn at its
    /// edge. Default: `None` (the data extent, padded by 5%).
    pub y_range: Option<(f64, f64)>,
    /// Width in pixels. Default: 640.
    pub width: u32,
    /// Height in pixels. Default: 400.
    pub height: u32,
}

impl Default for ChartSpec {
    fn default() -> Self {
        ChartSpec {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            log_x: false,
            log_y: false,
            y_range: None,
            width: 640,
            height: 400,
        }
    }
}

impl ChartSpec {
    /// A default-sized linear chart with the given title and axis labels.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        ChartSpec {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..ChartSpec::default()
        }
    }
}

/// Optional per-series drawing overrides.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesStyle {
    /// RGB colour. Default: the series' slot in the Tableau 10 palette.
    pub colour: Option<(u8, u8, u8)>,
    /// Dashed line. Default: false.
    pub dashed: bool,
    /// Draw a marker per point. Default: only for series of < 30 points.
    pub markers: Option<bool>,
}

/// One named line: `(x, y)` points in drawing order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points; NaN/inf ones (and non-positive ones on a log axis) are gaps.
    pub points: Vec<(f64, f64)>,
    /// Overrides; `None` uses the defaults of [`SeriesStyle`].
    pub style: Option<SeriesStyle>,
}

impl Series {
    /// A series with the default style.
    pub fn new(name: &str, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            style: None,
        }
    }

    /// `values[i]` plotted at `x = i` (e.g. a singular-value spectrum).
    pub fn from_values(name: &str, values: &[f64]) -> Self {
        let points = values.iter().enumerate();
        Series::new(name, points.map(|(i, v)| (i as f64, *v)).collect())
    }

    /// The same series with `style` applied.
    pub fn with_style(mut self, style: SeriesStyle) -> Self {
        self.style = Some(style);
        self
    }
}

type Root<'a> = DrawingArea<SVGBackend<'a>, Shift>;
pub(crate) type DrawResult = Result<(), Box<dyn Error>>;

/// Renders `draw` onto a white `spec`-sized SVG and returns the document.
pub(crate) fn render_svg(
    spec: &ChartSpec,
    draw: impl FnOnce(&Root<'_>) -> DrawResult,
) -> Result<String, ReportError> {
    let mut svg = String::new();
    let size = (spec.width.max(160), spec.height.max(120));
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| ReportError::plot(&spec.title, e))?;
        draw(&root).map_err(|e| ReportError::plot(&spec.title, e))?;
        root.present()
            .map_err(|e| ReportError::plot(&spec.title, e))?;
    }
    Ok(svg)
}

/// The fixed y range in plot space, checked.
pub(crate) fn y_range_plot(spec: &ChartSpec, y: Scale) -> Result<Option<(f64, f64)>, ReportError> {
    let Some((lo, hi)) = spec.y_range else {
        return Ok(None);
    };
    match (y.to_plot(lo), y.to_plot(hi)) {
        (Some(a), Some(b)) if a < b => Ok(Some((a, b))),
        _ => Err(ReportError::chart_input(
            &spec.title,
            format!("y_range ({lo}, {hi}) must be finite, increasing and positive on a log axis"),
        )),
    }
}

/// A line chart: one coloured line per series, markers on short series, a
/// legend (omitted when every name is empty) in the emptiest corner, and
/// padded axis ranges. Errors with `NoData` if no series has a
/// drawable point.
pub fn line_chart(spec: &ChartSpec, series: &[Series]) -> Result<String, ReportError> {
    let (sx, sy) = (Scale { log: spec.log_x }, Scale { log: spec.log_y });
    let fixed_y = y_range_plot(spec, sy)?;
    // Plot-space points; `None` marks a gap.
    let mapped: Vec<Vec<Option<(f64, f64)>>> = series
        .iter()
        .map(|s| {
            let y_clamp = |y: f64| fixed_y.map_or(y, |(lo, hi)| y.clamp(lo, hi));
            let point = |&(x, y): &(f64, f64)| Some((sx.to_plot(x)?, y_clamp(sy.to_plot(y)?)));
            s.points.iter().map(point).collect()
        })
        .collect();
    let finite: Vec<(f64, f64)> = mapped.iter().flatten().flatten().copied().collect();
    if finite.is_empty() {
        return Err(ReportError::NoData {
            title: spec.title.clone(),
        });
    }
    let extent = |f: fn(&(f64, f64)) -> f64| {
        let it = finite.iter().map(f);
        (
            it.clone().fold(f64::INFINITY, f64::min),
            it.fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let (x_lo, x_hi) = extent(|p| p.0);
    let (y_lo, y_hi) = extent(|p| p.1);
    let xr = padded_range(x_lo, x_hi, sx.log);
    let yr = fixed_y.unwrap_or_else(|| padded_range(y_lo, y_hi, sy.log));
    let corner = legend_corner(finite.iter().map(|p| (frac(p.0, xr), frac(p.1, yr))));

    render_svg(spec, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&spec.title, font(20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                axis(xr, sx.ticks(xr.0, xr.1)),
                axis(yr, sy.ticks(yr.0, yr.1)),
            )?;
        chart
            .configure_mesh()
            .x_desc(spec.x_label.as_str())
            .y_desc(spec.y_label.as_str())
            .x_label_formatter(&|v| sx.label(*v))
            .y_label_formatter(&|v| sy.label(*v))
            .label_style(font(12))
            .axis_desc_style(font(14))
            .bold_line_style(BLACK.mix(0.12))
            .draw()?;
        for (i, (s, pts)) in series.iter().zip(&mapped).enumerate() {
            let style = s.style.clone().unwrap_or_default();
            let colour = style
                .colour
                .map_or(series_colour(i), |(r, g, b)| RGBColor(r, g, b));
            let line = colour.stroke_width(2);
            let n_finite = pts.iter().flatten().count();
            let markers = style.markers.unwrap_or(n_finite < 30);
            // A non-finite point breaks the line into separate runs.
            for run in pts.split(Option::is_none).filter(|r| !r.is_empty()) {
                let run = run.iter().flatten().copied();
                if style.dashed {
                    chart.draw_series(DashedLineSeries::new(run, 8, 5, line))?;
                } else {
                    chart.draw_series(LineSeries::new(run, line))?;
                }
            }
            let dots = pts.iter().flatten().filter(|_| markers);
            let radius = if markers { 3 } else { 0 };
            chart
                .draw_series(dots.map(|p| Circle::new(*p, 3, colour.filled())))?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(-8, 0), (12, 0)], line)
                        + Circle::new((2, 0), radius, colour.filled())
                });
        }
        if series.iter().all(|s| s.name.is_empty()) {
            return Ok(());
        }
        draw_legend(&mut chart, corner)
    })
}

/// Draws the series legend in `corner` of the plotting area.
pub(crate) fn draw_legend<'a>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<super::axis::Axis, super::axis::Axis>>,
    corner: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(corner)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(font(12))
        .draw()?;
    Ok(())
}

/// Singular values against their index on a log y axis: a line chart with
/// `log_y` forced on and default axis labels `index` / `singular value`.
pub fn spectrum_chart(spec: &ChartSpec, spectra: &[Series]) -> Result<String, ReportError> {
    let mut spec = spec.clone();
    spec.log_y = true;
    if spec.x_label.is_empty() {
        spec.x_label = "index".into();
    }
    if spec.y_label.is_empty() {
        spec.y_label = "singular value".into();
    }
    line_chart(&spec, spectra)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The checks every chart document must pass.
    pub(crate) fn assert_svg_doc(svg: &str, must_contain: &[&str]) {
        assert!(
            svg.starts_with("<svg"),
            "starts with: {:?}",
            &svg[..svg.len().min(40)]
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), svg.matches("</svg>").count());
        assert!(
            !svg.contains("NaN") && !svg.contains("inf\""),
            "non-finite coordinate"
        );
        for s in must_contain {
            assert!(svg.contains(s), "missing {s:?}");
        }
    }

    fn spec(title: &str) -> ChartSpec {
        ChartSpec::new(title, "step", "loss")
    }

    #[test]
    fn line_chart_has_title_and_series_names() {
        let a = Series::new(
            "train",
            (0..50)
                .map(|i| (i as f64, 1.0 / (1.0 + i as f64)))
                .collect(),
        );
        let b = Series::new("eval", vec![(0.0, 1.0), (25.0, 0.3), (49.0, 0.1)]);
        let svg = line_chart(&spec("Loss curves"), &[a, b]).unwrap();
        assert_svg_doc(&svg, &["Loss curves", "train", "eval", "step", "loss"]);
        assert!(svg.contains("<circle"), "short series gets markers");
    }

    #[test]
    fn nan_and_inf_points_are_skipped() {
        let pts = vec![
            (0.0, 1.0),
            (1.0, f64::NAN),
            (2.0, f64::INFINITY),
            (f64::NAN, 2.0),
            (3.0, 2.0),
        ];
        let svg = line_chart(&spec("gaps"), &[Series::new("s", pts)]).unwrap();
        assert_svg_doc(&svg, &["gaps"]);
    }

    #[test]
    fn single_point_and_constant_series_render() {
        let one = Series::new("one", vec![(5.0, 0.0)]);
        assert_svg_doc(&line_chart(&spec("single"), &[one]).unwrap(), &["one"]);
        let flat = Series::from_values("flat", &[2.0; 10]);
        let mut log = spec("flat log");
        (log.log_x, log.log_y) = (true, true);
        assert_svg_doc(&line_chart(&log, &[flat]).unwrap(), &["flat"]);
    }

    #[test]
    fn empty_input_is_no_data_error() {
        let err = line_chart(&spec("empty"), &[]).unwrap_err();
        assert!(matches!(err, ReportError::NoData { .. }));
        assert!(err.to_string().contains("empty"));
        let all_nan = Series::new("nan", vec![(f64::NAN, 1.0)]);
        assert!(matches!(
            line_chart(&spec("x"), &[all_nan]),
            Err(ReportError::NoData { .. })
        ));
    }

    #[test]
    fn log_axis_skips_non_positive_and_checks_y_range() {
        let s = Series::new("s", vec![(1.0, 0.0), (2.0, -1.0), (3.0, 10.0), (4.0, 1e-3)]);
        let mut sp = spec("log");
        sp.log_y = true;
        assert_svg_doc(
            &line_chart(&sp, std::slice::from_ref(&s)).unwrap(),
            &["log"],
        );
        sp.y_range = Some((0.0, 1.0));
        assert!(matches!(
            line_chart(&sp, &[s]),
            Err(ReportError::InvalidInput { .. })
        ));
    }

    #[test]
    fn title_is_xml_escaped() {
        let svg = line_chart(
            &spec("a < b & c"),
            &[Series::from_values("<s>", &[1.0, 2.0])],
        )
        .unwrap();
        assert_svg_doc(&svg, &["a &lt; b &amp; c", "&lt;s&gt;"]);
    }

    #[test]
    fn spectrum_chart_is_log_y() {
        let sv: Vec<f64> = (0..64).map(|i| 10f64.powf(-(i as f64) / 16.0)).collect();
        let svg = spectrum_chart(
            &ChartSpec {
                title: "W_in spectrum".into(),
                ..Default::default()
            },
            &[Series::from_values("layer 0", &sv)],
        )
        .unwrap();
        assert_svg_doc(
            &svg,
            &["W_in spectrum", "layer 0", "singular value", "0.001"],
        );
    }
}
