//! Line charts as inline SVG, for the self-contained HTML report: pure string building, no
//! scripts, fonts or external files.
//!
//! Invariants: every piece of text is escaped with [`escape`]; non-finite points are dropped; an
//! empty chart still draws its axes (with "no data"); a one-point series draws a dot; axes start
//! at zero and end on a "nice" tick (1, 2 or 5 × 10ⁿ steps), so no range is ever empty. The
//! legend is one row between the title and the plot, so it never hides a line.

use std::fmt::Write as _;

/// Escapes `text` for HTML/SVG text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// A CSS color.
    pub color: String,
    /// (x, y) points in x order.
    pub points: Vec<(f64, f64)>,
}

/// A moment marked across the plot: a dashed vertical line at `x` with a label at its top.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    /// Where on the x axis.
    pub x: f64,
    /// What happened then.
    pub label: String,
}

/// A line chart: a title, axis labels, its lines and marked moments.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Above the plot.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// Moments marked across the plot (non-finite ones are dropped).
    pub marks: Vec<Mark>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 44.0;
const TICKS: f64 = 5.0;

/// The smallest 1, 2 or 5 × 10ⁿ step that covers `range` in `TICKS` steps.
fn nice_step(range: f64) -> f64 {
    let raw = if range.is_finite() && range > 0.0 {
        range / TICKS
    } else {
        1.0 / TICKS
    };
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// A tick label: no more decimals than the step needs.
fn label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        // Steps are 1, 2 or 5 × 10ⁿ: -log10 rounded up gives the decimals needed.
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    };
    format!("{v:.decimals$}")
}

/// Renders `chart` as an `<svg>` element.
pub fn line_chart(chart: &Chart) -> String {
    let series: Vec<(&Series, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|s| {
            let pts = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            (s, pts)
        })
        .collect();
    let all = series.iter().flat_map(|(_, p)| p.iter().copied());
    let marks: Vec<&Mark> = chart.marks.iter().filter(|m| m.x.is_finite()).collect();
    let (x_max, y_max) = all.fold((0.0f64, 0.0f64), |(mx, my), (x, y)| (mx.max(x), my.max(y)));
    let x_max = marks.iter().fold(x_max, |mx, m| mx.max(m.x));
    let x_step = nice_step(x_max);
    let y_step = nice_step(y_max);
    let x_end = (x_max / x_step).ceil().max(1.0) * x_step;
    let y_end = (y_max / y_step).ceil().max(1.0) * y_step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x.max(0.0) / x_end) * plot_w;
    let py = |y: f64| TOP + plot_h - (y.max(0.0) / y_end) * plot_h;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{title}" font-family="sans-serif" font-size="11">"#,
        title = escape(&chart.title)
    );
    let _ = write!(
        svg,
        r#"<text x="{x}" y="20" font-size="14" font-weight="bold">{title}</text>"#,
        x = LEFT,
        title = escape(&chart.title)
    );
    // Grid lines and tick labels.
    let mut k = 0.0;
    while k <= TICKS * 2.0 {
        let v = k * y_step;
        if v > y_end + y_step / 2.0 {
            break;
        }
        let y = py(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="end">{l}</text>"##,
            x2 = WIDTH - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            l = escape(&label(v, y_step))
        );
        k += 1.0;
    }
    let mut k = 0.0;
    while k <= TICKS * 2.0 {
        let v = k * x_step;
        if v > x_end + x_step / 2.0 {
            break;
        }
        let x = px(v);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{y1:.1}" x2="{x:.1}" y2="{y2:.1}" stroke="#888"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle">{l}</text>"##,
            y1 = TOP + plot_h,
            y2 = TOP + plot_h + 4.0,
            ty = TOP + plot_h + 16.0,
            l = escape(&label(v, x_step))
        );
        k += 1.0;
    }
    // Axes and their labels.
    let _ = write!(
        svg,
        r##"<path d="M{LEFT} {TOP} V{b:.1} H{r:.1}" fill="none" stroke="#333"/><text x="{cx:.1}" y="{ly:.1}" text-anchor="middle">{xl}</text><text transform="translate(14 {cy:.1}) rotate(-90)" text-anchor="middle">{yl}</text>"##,
        b = TOP + plot_h,
        r = WIDTH - RIGHT,
        cx = LEFT + plot_w / 2.0,
        ly = HEIGHT - 8.0,
        cy = TOP + plot_h / 2.0,
        xl = escape(&chart.x_label),
        yl = escape(&chart.y_label)
    );
    if series.iter().all(|(_, p)| p.is_empty()) {
        let _ = write!(
            svg,
            r##"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" fill="#888">no data</text>"##,
            x = LEFT + plot_w / 2.0,
            y = TOP + plot_h / 2.0
        );
    }
    for m in &marks {
        let x = px(m.x);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{b:.1}" stroke="#b00" stroke-dasharray="4 3"/><text transform="translate({tx:.1} {ty:.1}) rotate(-90)" text-anchor="end" fill="#b00" font-size="9">{l}</text>"##,
            b = TOP + plot_h,
            tx = x - 2.0,
            ty = TOP + 2.0,
            l = escape(&m.label)
        );
    }
    let mut legend_x = LEFT;
    for (s, pts) in &series {
        let color = escape(&s.color);
        match pts.as_slice() {
            [] => {}
            [(x, y)] => {
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    px(*x),
                    py(*y)
                );
            }
            _ => {
                let coords: Vec<String> = pts
                    .iter()
                    .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                    .collect();
                let _ = write!(
                    svg,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    coords.join(" ")
                );
            }
        }
        // Legend: one row under the title; about 6.5 px per character at font-size 11.
        let lx = legend_x;
        let ly = TOP - 14.0;
        legend_x += 34.0 + 6.5 * s.name.chars().count() as f64;
        let _ = write!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{x2:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/><text x="{tx:.1}" y="{ty:.1}">{name}</text>"#,
            x2 = lx + 16.0,
            tx = lx + 20.0,
            ty = ly + 4.0,
            name = escape(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(f64, f64)>) -> Chart {
        Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "s".into(),
                color: "red".into(),
                points,
            }],
            marks: Vec::new(),
        }
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        let mut c = chart(vec![(0.0, 1.0), (1.0, 2.0)]);
        c.title = "<script>alert(1)</script>".into();
        c.series[0].name = "a & b".into();
        c.series[0].color = "\"><script>".into();
        let svg = line_chart(&c);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(svg.contains("a &amp; b"));
    }

    #[test]
    fn an_empty_chart_draws_axes_and_says_so() {
        for c in [chart(vec![]), chart(vec![(f64::NAN, 1.0)])] {
            let svg = line_chart(&c);
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
            assert!(svg.contains("no data"));
            assert!(!svg.contains("polyline"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
    }

    #[test]
    fn one_point_is_a_dot_and_many_are_a_line() {
        let svg = line_chart(&chart(vec![(0.0, 0.0)]));
        assert!(svg.contains("<circle") && !svg.contains("polyline"));
        assert!(!svg.contains("NaN"), "{svg}");
        let svg = line_chart(&chart(vec![(0.0, 5.0), (1.0, 12_000.0), (2.0, 30.0)]));
        assert!(svg.contains("<polyline") && !svg.contains("no data"));
        assert!(svg.contains(">12000<") || svg.contains(">15000<"), "{svg}");
    }

    #[test]
    fn marks_are_dashed_lines_with_labels_and_widen_the_x_axis() {
        let mut c = chart(vec![(0.0, 1.0), (2.0, 2.0)]);
        c.marks = vec![
            Mark {
                x: 9.0,
                label: "killed <api>".into(),
            },
            Mark {
                x: f64::NAN,
                label: "dropped".into(),
            },
        ];
        let svg = line_chart(&c);
        assert_eq!(svg.matches("stroke-dasharray").count(), 1);
        assert!(svg.contains("killed &lt;api&gt;") && !svg.contains("dropped"));
        assert!(svg.contains(">10<"), "the x axis reaches the mark: {svg}");
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn steps_are_nice() {
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(23.0), 5.0);
        assert_eq!(nice_step(0.0), 0.2);
        assert_eq!(nice_step(f64::NAN), 0.2);
        assert_eq!(label(0.4, 0.2), "0.4");
        assert_eq!(label(3000.0, 1000.0), "3000");
    }
}
