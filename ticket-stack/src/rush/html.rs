//! The rush's report as one self-contained HTML page: the summary table of the text report and
//! inline SVG charts of throughput, latency and tickets sold over time. Pure: the caller writes
//! the string wherever it wants.
//!
//! Invariants: no external scripts, styles, fonts or images (the page works offline and from a
//! file); every piece of text from the report goes through [`svg::escape`].

use std::fmt::Write as _;
use std::time::Duration;

use super::RushReport;
use super::svg::{self, Chart, Mark, Series};
use super::verify::Invariant;

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn row(html: &mut String, name: &str, value: &str) {
    let _ = write!(
        html,
        "<tr><th>{}</th><td>{}</td></tr>",
        svg::escape(name),
        svg::escape(value)
    );
}

/// The processes killed during the rush, as marks on a chart over the rush's seconds.
fn kill_marks(report: &RushReport) -> Vec<Mark> {
    report
        .kills
        .iter()
        .map(|k| Mark {
            x: k.at.as_secs_f64(),
            label: format!("killed {}", k.process),
        })
        .collect()
}

/// The throughput chart: accepted purchases and requests sent, per second.
pub fn throughput_chart(report: &RushReport) -> Chart {
    let seconds = report.timeline.seconds();
    let per_second = |f: fn(&super::timeline::Second) -> u64| {
        seconds
            .iter()
            .enumerate()
            .map(|(i, s)| (i as f64, f(s) as f64))
            .collect()
    };
    Chart {
        title: "Throughput".into(),
        x_label: "seconds since the rush started".into(),
        y_label: "per second".into(),
        series: vec![
            Series {
                name: "accepted purchases/s".into(),
                color: "#1f77b4".into(),
                points: per_second(|s| s.accepted),
            },
            Series {
                name: "requests sent/s".into(),
                color: "#aaaaaa".into(),
                points: per_second(|s| s.sent),
            },
            Series {
                name: "other answers/s".into(),
                color: "#d62728".into(),
                points: per_second(|s| s.other + s.errors),
            },
        ],
        marks: kill_marks(report),
    }
}

/// The latency chart: p50 and p99 of the answers in each second, in milliseconds.
pub fn latency_chart(report: &RushReport) -> Chart {
    let quantile = |q: f64| {
        report
            .timeline
            .seconds()
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as f64, s.latency.quantile_us(q)? as f64 / 1000.0)))
            .collect()
    };
    Chart {
        title: "Latency".into(),
        x_label: "seconds since the rush started".into(),
        y_label: "milliseconds".into(),
        series: vec![
            Series {
                name: "p50".into(),
                color: "#2ca02c".into(),
                points: quantile(0.5),
            },
            Series {
                name: "p99".into(),
                color: "#ff7f0e".into(),
                points: quantile(0.99),
            },
        ],
        marks: kill_marks(report),
    }
}

/// The sell-out chart: the event's `sold` count over the rush and the verify phase, the
/// event's tickets, and a mark where the rush's last answer came.
pub fn sold_chart(report: &RushReport) -> Chart {
    let sold: Vec<(f64, f64)> = report
        .sold
        .iter()
        .map(|s| (s.at.as_secs_f64(), f64::from(s.sold)))
        .collect();
    let end = sold.last().map_or(0.0, |(x, _)| *x);
    let tickets = f64::from(report.tickets);
    let rush_end = (report.purchases_began + report.elapsed).as_secs_f64();
    Chart {
        title: "Tickets sold".into(),
        x_label: "seconds since the rush started".into(),
        y_label: "tickets".into(),
        series: vec![
            Series {
                name: "sold".into(),
                color: "#9467bd".into(),
                points: sold,
            },
            Series {
                name: "tickets".into(),
                color: "#cccccc".into(),
                points: vec![(0.0, tickets), (end.max(rush_end), tickets)],
            },
            Series {
                name: "rush's last answer".into(),
                color: "#888888".into(),
                points: vec![(rush_end, 0.0), (rush_end, tickets)],
            },
        ],
        marks: kill_marks(report),
    }
}

/// The waiting room chart, for an event with one: buyers in line (joined, not yet admitted)
/// and admitted per second, over the rush.
pub fn line_chart(report: &RushReport) -> Option<Chart> {
    let line = report.line.as_ref()?;
    let mut joins: Vec<f64> = line.joins.iter().map(Duration::as_secs_f64).collect();
    let mut admits: Vec<f64> = line
        .permits
        .iter()
        .map(|(_, at)| at.as_secs_f64())
        .collect();
    joins.sort_by(f64::total_cmp);
    admits.sort_by(f64::total_cmp);
    let end = joins
        .last()
        .copied()
        .unwrap_or(0.0)
        .max(admits.last().copied().unwrap_or(0.0));
    let count_by = |xs: &[f64], t: f64| xs.partition_point(|x| *x <= t) as f64;
    // Four samples a second of the line's length; admissions counted per whole second.
    let steps = (end * 4.0).ceil() as usize + 1;
    let waiting = (0..=steps)
        .map(|i| {
            let t = i as f64 / 4.0;
            (t, count_by(&joins, t) - count_by(&admits, t))
        })
        .collect();
    let admitted = (0..=end.ceil() as usize)
        .map(|s| {
            let from = s as f64;
            (
                from,
                count_by(&admits, from + 1.0) - count_by(&admits, from),
            )
        })
        .collect();
    Some(Chart {
        title: "Waiting room".into(),
        x_label: "seconds since the rush started".into(),
        y_label: "buyers".into(),
        series: vec![
            Series {
                name: "in line (joined, not yet admitted)".into(),
                color: "#1f77b4".into(),
                points: waiting,
            },
            Series {
                name: "admitted/s (permits)".into(),
                color: "#2ca02c".into(),
                points: admitted,
            },
        ],
        marks: kill_marks(report),
    })
}

const STYLE: &str = "body{font-family:sans-serif;max-width:760px;margin:2em auto;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{text-align:left;padding:3px 10px;border-bottom:1px solid #eee;vertical-align:top}\
th{font-weight:normal;color:#555}.held{color:#2a7a2a}.broken{color:#b00;font-weight:bold}figure{margin:1.5em 0}";

/// Renders the whole page.
pub fn render(report: &RushReport) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>ticketrush rush report</title><style>{STYLE}</style></head><body>"
    );
    let _ = write!(
        html,
        "<h1>ticketrush: rush report</h1><p>{} buyers against {}, event {}, in {:.2} s.</p>",
        report.buyers,
        svg::escape(&report.targets.join(", ")),
        report.event,
        report.elapsed.as_secs_f64()
    );

    html.push_str("<h2>Summary</h2><table>");
    let h = &report.latency_us;
    row(&mut html, "buyers", &report.buyers.to_string());
    row(&mut html, "logins", &report.logins_summary());
    if let Some(line) = report.line_summary() {
        row(&mut html, "waiting room", &line);
    }
    row(&mut html, "requests sent", &report.requests.to_string());
    row(
        &mut html,
        "purchases accepted",
        &report.accepted.to_string(),
    );
    row(
        &mut html,
        "transport errors",
        &report.transport_errors.to_string(),
    );
    row(
        &mut html,
        "failures",
        &format!(
            "{} absorbed by re-sending, {} seen by buyers",
            report.resent, report.failed
        ),
    );
    if !report.kills.is_empty() {
        let kills: Vec<String> = report.kills.iter().map(ToString::to_string).collect();
        row(&mut html, "killed", &kills.join(", "));
    }
    row(
        &mut html,
        "throughput",
        &format!("{:.0} accepted purchases/s", report.accepted_per_sec()),
    );
    row(
        &mut html,
        "latency",
        &format!(
            "p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        ),
    );
    let statuses: Vec<String> = report
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    row(&mut html, "statuses", &statuses.join(", "));
    row(&mut html, "tickets", &report.tickets.to_string());
    if let Some(v) = &report.verification {
        row(
            &mut html,
            "confirmed",
            &format!(
                "{} purchases ({} tickets)",
                v.confirmed, v.confirmed_tickets
            ),
        );
        let mut rejected: Vec<String> =
            v.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
        rejected.sort();
        row(
            &mut html,
            "rejected",
            &if rejected.is_empty() {
                "none".to_owned()
            } else {
                rejected.join(", ")
            },
        );
        row(&mut html, "pending", &v.pending.to_string());
    }
    if let Some(d) = report.decided_within() {
        row(&mut html, "every purchase final", &d);
    }
    html.push_str("</table>");

    html.push_str("<h2>Invariants</h2>");
    match &report.verification {
        None => html.push_str("<p>Not checked (run with --verify).</p>"),
        Some(v) => {
            html.push_str("<table>");
            let checks = Invariant::ALL
                .iter()
                .map(|i| (i.describe(), v.holds(*i)))
                .chain([("bad requests refused with 400", report.bad_not_refused == 0)]);
            for (name, held) in checks {
                let (class, word) = if held {
                    ("held", "held")
                } else {
                    ("broken", "BROKEN")
                };
                let _ = write!(
                    html,
                    "<tr><th>{}</th><td class=\"{class}\">{word}</td></tr>",
                    svg::escape(name)
                );
            }
            html.push_str("</table>");
        }
    }
    let problems = report.problems();
    if problems.is_empty() {
        if report.verification.is_some() {
            html.push_str("<p class=\"held\">Every invariant held.</p>");
        }
    } else {
        html.push_str("<ul class=\"broken\">");
        for p in problems {
            let _ = write!(html, "<li>{}</li>", svg::escape(&p));
        }
        html.push_str("</ul>");
    }

    html.push_str("<h2>Over time</h2>");
    for chart in line_chart(report).into_iter().chain([
        throughput_chart(report),
        latency_chart(report),
        sold_chart(report),
    ]) {
        let _ = write!(html, "<figure>{}</figure>", svg::line_chart(&chart));
    }
    html.push_str(
        "<p>Per-second latencies come from a log-linear histogram (within 1/16 of the true \
         value); the summary's percentiles are exact. The first decided figure is an upper \
         bound: it includes the time --verify takes to poll every purchase; the last-in-line \
         figure probes the purchase workers decide last every 20 ms.</p></body></html>\n",
    );
    html
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use hdrhistogram::Histogram;

    use super::*;
    use crate::rush::timeline::{Second, SoldSample, Timeline};
    use crate::rush::verify::Verification;
    use ticket_svc::domain::EventId;

    fn report() -> RushReport {
        let mut latency_us = Histogram::new(3).unwrap();
        latency_us.record(1_500).unwrap();
        let mut timeline = Timeline::default();
        let mut second = Second {
            sent: 10,
            accepted: 8,
            other: 2,
            ..Second::default()
        };
        second.latency.record(1_500);
        timeline.add(0, &second);
        timeline.add(1, &second);
        RushReport {
            targets: vec!["http://127.0.0.1:1/<x>".into()],
            started: tokio::time::Instant::now(),
            event: EventId(3),
            buyers: 20,
            logins: 20,
            login_failures: 0,
            login_elapsed: Duration::from_millis(400),
            line: None,
            purchases_began: Duration::ZERO,
            requests: 20,
            statuses: BTreeMap::from([(202, 16), (400, 4)]),
            transport_errors: 0,
            resent: 3,
            failed: 0,
            require_answers: true,
            kills: vec![crate::rush::Kill {
                at: Duration::from_millis(1500),
                process: "api <1>".into(),
            }],
            accepted: 16,
            elapsed: Duration::from_secs(2),
            latency_us,
            bad_not_refused: 0,
            retry_mismatches: 0,
            verification: Some(Verification {
                confirmed: 5,
                confirmed_tickets: 10,
                ..Verification::default()
            }),
            tickets: 10,
            decided_after: Some(Duration::from_millis(250)),
            last_in_line_decided_after: Some(Duration::from_millis(40)),
            timeline,
            sold: vec![SoldSample {
                at: Duration::ZERO,
                sold: 0,
            }],
        }
    }

    #[test]
    fn a_waiting_room_gets_a_chart_of_its_line() {
        let mut r = report();
        assert!(line_chart(&r).is_none(), "no room, no chart");
        r.line = Some(crate::rush::waiting::LineSeen {
            joined: 3,
            pre_queue: 2,
            admitted: 3,
            joins: vec![
                Duration::from_millis(100),
                Duration::from_millis(200),
                Duration::from_millis(2500),
            ],
            permits: vec![
                (0, Duration::from_millis(2100)),
                (1, Duration::from_millis(2200)),
                (2, Duration::from_millis(2600)),
            ],
            ..Default::default()
        });
        let chart = line_chart(&r).unwrap();
        let waiting = &chart.series[0].points;
        assert_eq!(
            waiting.iter().map(|(_, y)| *y).fold(0.0, f64::max),
            2.0,
            "{waiting:?}"
        );
        assert_eq!(
            waiting.last().map(|(_, y)| *y),
            Some(0.0),
            "everyone admitted"
        );
        let admitted: f64 = chart.series[1].points.iter().map(|(_, y)| y).sum();
        assert_eq!(admitted, 3.0);
        let page = render(&r);
        assert_eq!(page.matches("<svg").count(), 4, "the line's chart first");
        assert!(page.contains("Waiting room") && page.contains("2 before the opening"));
    }

    #[test]
    fn the_page_has_the_summary_the_invariants_and_three_charts() {
        let html = render(&report());
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains("http://127.0.0.1:1/&lt;x&gt;"), "escaped");
        assert!(!html.contains("<x>"));
        assert!(html.contains("8 accepted purchases/s"));
        assert!(html.contains("202: 16, 400: 4"));
        assert!(html.contains("3 absorbed by re-sending, 0 seen by buyers"));
        assert_eq!(
            html.matches("killed api &lt;1&gt;").count(),
            3,
            "on every chart"
        );
        assert!(html.contains("api &lt;1&gt; at 1.5 s"));
        assert!(html.contains("5 purchases (10 tickets)"));
        assert!(html.contains("0.25 s after"));
        assert!(html.contains("last in line was final after 0.04 s"));
        assert!(html.contains("first come, first served"));
        assert!(html.contains("Every invariant held"));
        assert!(
            !html.contains("src=") && !html.contains("<script"),
            "self-contained"
        );
    }

    #[test]
    fn broken_invariants_and_an_empty_rush_still_render() {
        let mut r = report();
        r.timeline = Timeline::default();
        r.sold.clear();
        r.decided_after = None;
        r.bad_not_refused = 1;
        if let Some(v) = r.verification.as_mut() {
            v.pending = 2;
            v.violations
                .push("2 accepted purchases <never> final".into());
            v.broken.insert(Invariant::EveryPurchaseDecided);
        }
        let html = render(&r);
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains("no data"));
        assert!(html.contains("BROKEN"));
        assert!(html.contains("&lt;never&gt;"));
        assert!(html.contains("2 purchases still pending"));
    }
}
