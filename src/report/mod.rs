//! Reports: SVG charts drawn with `plotters` (line, bar, heatmap, scatter,
//! singular value spectrum) and a self-contained HTML report that inlines them.
//!
//! The last stage of `data → models → train → surgery/interp → report`; it
//! may import nothing from the rest of the crate, so callers hand it plain
//! numbers and strings.

mod axis;
pub mod bar;
pub mod error;
pub mod files;
pub mod heatmap;
pub mod html;
pub mod plot;
pub mod scatter;

pub use bar::{bar_chart, BarGroup};
pub use error::ReportError;
pub use heatmap::heatmap;
pub use html::{Cell, ClaimRow, Report};
pub use plot::{line_chart, spectrum_chart, ChartSpec, Series, SeriesStyle};
pub use scatter::scatter_chart;
