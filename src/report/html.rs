//! A self-contained HTML report: headings, paragraphs, tables (with PASS /
//! FAIL cell classes), preformatted text and inline SVG figures, with inline
//! CSS and no external resources. `write` saves the page atomically plus
//! each figure as its own `.svg`. May import nothing from the rest of the
//! crate.

use std::fs;
use std::path::{Path, PathBuf};

use super::files::{unique_slugs, write_atomic};
use super::ReportError;

/// Inline stylesheet; cell classes `pass`, `fail`, `warn`, `num`.
const CSS: &str = "\
body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
td.pass{background:#e3f6e3;color:#17601b;font-weight:600}
td.fail{background:#fbe3e3;color:#a11;font-weight:600}
td.warn{background:#fff4d6;color:#7a5a00}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1.5em 0}
figure svg{max-width:100%;height:auto}
figcaption{color:#555;font-size:.92em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto}
";

/// One table cell: text plus an optional CSS class (`pass`, `fail`, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// Cell text (escaped on output).
    pub text: String,
    /// CSS class from the inline stylesheet, if any.
    pub class: Option<&'static str>,
}

impl Cell {
    /// A cell with a class, e.g. `Cell::with_class("0.93", "num")`.
    pub fn with_class(text: impl Into<String>, class: &'static str) -> Self {
        Cell {
            text: text.into(),
            class: Some(class),
        }
    }

    /// `PASS` in green or `FAIL` in red.
    pub fn verdict(passed: bool) -> Self {
        if passed {
            Cell::with_class("PASS", "pass")
        } else {
            Cell::with_class("FAIL", "fail")
        }
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Cell { text, class: None }
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Cell {
            text: text.into(),
            class: None,
        }
    }
}

/// One checked claim of a study, for [`Report::claims_table`].
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimRow {
    /// The claim as stated, e.g. "truncating fc_in lowers P(noise)".
    pub claim: String,
    /// Whether the measured numbers support it.
    pub passed: bool,
    /// The measured numbers, e.g. "0.61 → 0.12".
    pub detail: String,
}

#[derive(Clone, Debug)]
enum Block {
    Heading(String),
    Paragraph(String),
    Pre(String),
    Table {
        headers: Vec<String>,
        rows: Vec<Vec<Cell>>,
    },
    Figure {
        caption: String,
        svg: String,
    },
}

/// An HTML report, built block by block and rendered by [`Report::to_html`].
#[derive(Clone, Debug)]
pub struct Report {
    title: String,
    blocks: Vec<Block>,
}

impl Report {
    /// An empty report; `title` becomes `<title>` and the `<h1>`.
    pub fn new(title: impl Into<String>) -> Self {
        Report {
            title: title.into(),
            blocks: Vec::new(),
        }
    }

    /// Appends an `<h2>` section heading.
    pub fn heading(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Heading(text.into()));
        self
    }

    /// Appends a paragraph of plain text.
    pub fn paragraph(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Paragraph(text.into()));
        self
    }

    /// Appends a `<pre>` block (e.g. a resolved config or a log excerpt).
    pub fn preformatted(&mut self, text: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Pre(text.into()));
        self
    }

    /// Appends a table; cells are `String`, `&str` or [`Cell`] (with class).
    pub fn table<C: Into<Cell>>(&mut self, headers: &[&str], rows: Vec<Vec<C>>) -> &mut Self {
        let headers = headers.iter().map(|h| h.to_string()).collect();
        let rows = rows
            .into_iter()
            .map(|r| r.into_iter().map(Into::into).collect())
            .collect();
        self.blocks.push(Block::Table { headers, rows });
        self
    }

    /// Appends a Claim | Result | Measured table with PASS/FAIL cells.
    pub fn claims_table(&mut self, claims: &[ClaimRow]) -> &mut Self {
        let rows = claims
            .iter()
            .map(|c| {
                vec![
                    Cell::from(c.claim.as_str()),
                    Cell::verdict(c.passed),
                    Cell::from(c.detail.as_str()),
                ]
            })
            .collect();
        self.table(&["Claim", "Result", "Measured"], rows)
    }

    /// Appends a figure: `svg` (a document from `report::plot`) is inlined
    /// and `write` also saves it as `{slug of caption}.svg`.
    pub fn figure(&mut self, caption: impl Into<String>, svg: String) -> &mut Self {
        self.blocks.push(Block::Figure {
            caption: caption.into(),
            svg,
        });
        self
    }

    /// The complete page: inline CSS, escaped text, inline SVG.
    pub fn to_html(&self) -> String {
        let mut slugs = figure_slugs(&self.blocks).into_iter();
        let title = escape(&self.title);
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{title}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
        );
        for block in &self.blocks {
            match block {
                Block::Heading(t) => out += &format!("<h2>{}</h2>\n", escape(t)),
                Block::Paragraph(t) => out += &format!("<p>{}</p>\n", escape(t)),
                Block::Pre(t) => out += &format!("<pre>{}</pre>\n", escape(t)),
                Block::Table { headers, rows } => out += &table_html(headers, rows),
                Block::Figure { caption, svg } => {
                    let slug = slugs.next().expect("one slug per figure");
                    let svg = svg.trim_start_matches(|c: char| c != '<');
                    let svg = strip_xml_prolog(svg);
                    out += &format!(
                        "<figure id=\"{slug}\">\n{svg}\n<figcaption>{}</figcaption>\n</figure>\n",
                        escape(caption)
                    );
                }
            }
        }
        out + "</body>\n</html>\n"
    }

    /// Writes `dir/{name}.html` and `dir/{slug}.svg` per figure, each
    /// atomically (temp file in `dir`, then rename); creates `dir` if needed.
    /// Returns the written paths, the HTML first, then figures in order.
    pub fn write(&self, dir: &Path, name: &str) -> Result<Vec<PathBuf>, ReportError> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(ReportError::InvalidInput {
                what: format!("report `{}`", self.title),
                message: format!(
                    "file name `{name}` must be non-empty, not start with '.' \
                     and contain no path separator"
                ),
            });
        }
        fs::create_dir_all(dir).map_err(|source| ReportError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let html = dir.join(format!("{name}.html"));
        write_atomic(&html, self.to_html().as_bytes())?;
        let mut written = vec![html];
        let figures = self.blocks.iter().filter_map(|b| match b {
            Block::Figure { svg, .. } => Some(svg),
            _ => None,
        });
        for (slug, svg) in figure_slugs(&self.blocks).into_iter().zip(figures) {
            let path = dir.join(format!("{slug}.svg"));
            write_atomic(&path, svg.as_bytes())?;
            written.push(path);
        }
        Ok(written)
    }
}

fn table_html(headers: &[String], rows: &[Vec<Cell>]) -> String {
    let mut out = String::from("<table>\n<thead><tr>");
    for h in headers {
        out += &format!("<th>{}</th>", escape(h));
    }
    out += "</tr></thead>\n<tbody>\n";
    for row in rows {
        out += "<tr>";
        for cell in row {
            match cell.class {
                Some(class) => {
                    out += &format!(
                        "<td class=\"{}\">{}</td>",
                        escape(class),
                        escape(&cell.text)
                    )
                }
                None => out += &format!("<td>{}</td>", escape(&cell.text)),
            }
        }
        out += "</tr>\n";
    }
    out + "</tbody>\n</table>\n"
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '"' => out += "&quot;",
            '\'' => out += "&#39;",
            c => out.push(c),
        }
    }
    out
}

fn strip_xml_prolog(svg: &str) -> &str {
    match svg
        .strip_prefix("<?xml")
        .and_then(|rest| rest.split_once("?>"))
    {
        Some((_, rest)) => rest.trim_start(),
        None => svg,
    }
}

/// Unique slugs for the figures' captions, in document order.
fn figure_slugs(blocks: &[Block]) -> Vec<String> {
    unique_slugs(blocks.iter().filter_map(|b| match b {
        Block::Figure { caption, .. } => Some(caption.as_str()),
        _ => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVG: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\"><rect/></svg>\n";

    fn sample() -> Report {
        let mut r = Report::new("Truncation <study>");
        r.heading("Results")
            .paragraph("<script>alert('x')</script> & more")
            .table(&["variant", "acc"], vec![vec!["base", "0.91"]])
            .claims_table(&[
                ClaimRow {
                    claim: "noise drops".into(),
                    passed: true,
                    detail: "0.6 → 0.1".into(),
                },
                ClaimRow {
                    claim: "answer rises".into(),
                    passed: false,
                    detail: "0.2 → 0.2".into(),
                },
            ])
            .figure("Loss vs step", SVG.into())
            .figure("Loss vs step", SVG.into())
            .preformatted("a < b");
        r
    }

    #[test]
    fn text_is_escaped_and_svg_inlined() {
        let html = sample().to_html();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"));
        assert!(html.contains("<title>Truncation &lt;study&gt;</title>"));
        assert!(html.contains("<pre>a &lt; b</pre>"));
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(!html.contains("http-equiv") && !html.contains("<link") && !html.contains("src="));
    }

    #[test]
    fn claims_table_marks_pass_and_fail() {
        let html = sample().to_html();
        assert!(html.contains("<td class=\"pass\">PASS</td>"));
        assert!(html.contains("<td class=\"fail\">FAIL</td>"));
    }

    #[test]
    fn figure_slugs_follow_captions() {
        assert_eq!(
            figure_slugs(&sample().blocks),
            ["loss-vs-step", "loss-vs-step-2"]
        );
    }

    #[test]
    fn write_produces_files_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested");
        let paths = sample().write(&out, "report").unwrap();
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["report.html", "loss-vs-step.svg", "loss-vs-step-2.svg"]
        );
        assert_eq!(fs::read_to_string(&paths[1]).unwrap(), SVG);
        let mut listed: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            ["loss-vs-step-2.svg", "loss-vs-step.svg", "report.html"]
        );
        // Rewriting replaces in place.
        sample().write(&out, "report").unwrap();
        assert_eq!(fs::read_dir(&out).unwrap().count(), 3);
    }

    #[test]
    fn write_rejects_path_like_names_and_reports_io_path() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            sample().write(dir.path(), "../x"),
            Err(ReportError::InvalidInput { .. })
        ));
        let file = dir.path().join("not-a-dir");
        fs::write(&file, "").unwrap();
        let err = sample().write(&file, "r").unwrap_err();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
