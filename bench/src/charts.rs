//! Charts with plotters, each as PNG and SVG: CPU vs rate (log rate axis), cost above the
//! floor vs rate, the headline ratios with their bootstrap intervals, latency by message
//! size; medians with min-max error bars (the ratios: their 95 % intervals).
use std::path::Path;

use anyhow::{Context, Result};
use plotters::{
    coord::Shift,
    prelude::*,
    style::{FontStyle, register_font},
};

use crate::{
    modes::Mode,
    results::{Results, Spread},
};

/// Where Debian's fonts-dejavu-core puts its sans font.
const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font the PNG backend draws text with (once per process).
fn register_fonts() -> Result<()> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let bytes = std::fs::read(FONT_PATH)
            .map_err(|e| format!("{FONT_PATH}: {e} (install fonts-dejavu-core)"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{FONT_PATH}: not a font"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// One line of a chart: a mode's medians with their spread. Points in `off_target` did not
/// hold their offered rate: they are drawn with a cross so nobody reads them as if they did.
struct Series {
    label: String,
    points: Vec<(f64, Spread)>,
    off_target: Vec<f64>,
}

struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    log_x: bool,
    /// Times that span orders of magnitude (a load of 1 ms and of 40 s) on a log axis too.
    log_y: bool,
    series: Vec<Series>,
}

fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    PALETTE[i % PALETTE.len()]
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let xs: Vec<f64> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| [p.1.min, p.1.max]))
        .collect();
    if xs.is_empty() {
        return Ok(());
    }
    let (x0, x1) = (
        xs.iter().cloned().fold(f64::MAX, f64::min),
        xs.iter().cloned().fold(f64::MIN, f64::max),
    );
    let (y0, y1) = (
        ys.iter().cloned().fold(0.0, f64::min),
        ys.iter().cloned().fold(f64::MIN, f64::max),
    );
    let y_range = y0..(y1 * 1.1).max(y0 + 1e-6);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65);
    macro_rules! finish {
        ($ctx:expr) => {{
            let mut ctx = $ctx;
            ctx.configure_mesh()
                .x_desc(chart.x_label)
                .y_desc(chart.y_label)
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for (i, s) in chart.series.iter().enumerate() {
                let c = color(i);
                ctx.draw_series(LineSeries::new(
                    s.points.iter().map(|(x, sp)| (*x, sp.median)),
                    c.stroke_width(2),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
                ctx.draw_series(s.points.iter().map(|(x, sp)| {
                    ErrorBar::new_vertical(*x, sp.min, sp.median, sp.max, c.filled(), 6)
                }))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                ctx.draw_series(
                    s.points
                        .iter()
                        .filter(|(x, _)| s.off_target.contains(x))
                        .map(|(x, sp)| Cross::new((*x, sp.median), 9, c.stroke_width(3))),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            ctx.configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }};
    }
    if chart.log_x && chart.log_y {
        let low = ys
            .iter()
            .cloned()
            .filter(|y| *y > 0.0)
            .fold(f64::MAX, f64::min)
            .min(y1);
        finish!(
            builder
                .build_cartesian_2d(
                    (x0 * 0.8..x1 * 1.25).log_scale(),
                    (low * 0.8..y1 * 1.25).log_scale()
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?
        );
    } else if chart.log_x {
        finish!(
            builder
                .build_cartesian_2d((x0 * 0.8..x1 * 1.25).log_scale(), y_range)
                .map_err(|e| anyhow::anyhow!("{e}"))?
        );
    } else {
        let pad = (x1 - x0) * 0.05 + 1.0;
        finish!(
            builder
                .build_cartesian_2d(x0 - pad..x1 + pad, y_range)
                .map_err(|e| anyhow::anyhow!("{e}"))?
        );
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn write(dir: &Path, name: &str, chart: &Chart) -> Result<Vec<String>> {
    let png = dir.join(format!("{name}.png"));
    let svg = dir.join(format!("{name}.svg"));
    draw(
        BitMapBackend::new(&png, (1100, 700)).into_drawing_area(),
        chart,
    )
    .with_context(|| format!("drawing {}", png.display()))?;
    draw(
        SVGBackend::new(&svg, (1100, 700)).into_drawing_area(),
        chart,
    )
    .with_context(|| format!("drawing {}", svg.display()))?;
    Ok(vec![png.display().to_string(), svg.display().to_string()])
}

fn rate_series(
    r: &Results,
    protocol: &str,
    f: impl Fn(Mode, u64) -> Option<Spread>,
) -> Vec<Series> {
    let rates: Vec<u64> = r
        .settings
        .rates_for(protocol)
        .iter()
        .copied()
        .filter(|rate| *rate > 0)
        .collect();
    r.modes()
        .into_iter()
        .map(|mode| Series {
            label: mode.name().to_string(),
            points: rates
                .iter()
                .filter_map(|rate| f(mode, *rate).map(|s| (*rate as f64, s)))
                .collect(),
            off_target: rates
                .iter()
                .filter(|rate| r.any_off_target(mode, protocol, **rate))
                .map(|rate| *rate as f64)
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .map(|s| Series {
            label: format!("{} ({protocol})", s.label),
            ..s
        })
        .collect()
}

/// Draws every chart into `dir`; returns the files written.
pub fn draw_all(r: &Results, dir: &Path) -> Result<Vec<String>> {
    register_fonts()?;
    let mut files = Vec::new();
    for protocol in &r.settings.protocols {
        let p = protocol.as_str();
        if r.settings.rates_for(p).is_empty() {
            continue;
        }
        files.extend(write(
            dir,
            &format!("cpu_vs_rate_{p}"),
            &Chart {
                title: &format!(
                    "{}: kernel-level CPU (NET_RX+NET_TX softirq) vs rate (x: rate not held)",
                    p.to_uppercase()
                ),
                x_label: "offered rate, Mbit/s (log)",
                y_label: "softirq CPU, % of one CPU",
                log_x: true,
                log_y: false,
                series: rate_series(r, p, |m, rate| r.spread(m, p, rate, |x| x.softirq_cpu_pct)),
            },
        )?);
        files.extend(write(
            dir,
            &format!("above_floor_{p}"),
            &Chart {
                title: &format!(
                    "{}: dataplane cost above the floor vs rate (x: rate not held)",
                    p.to_uppercase()
                ),
                x_label: "offered rate, Mbit/s (log)",
                y_label: "softirq CPU above floor, % of one CPU",
                log_x: true,
                log_y: false,
                series: rate_series(r, p, |m, rate| {
                    if m == Mode::Floor {
                        None
                    } else {
                        r.above_floor(m, p, rate)
                    }
                }),
            },
        )?);
    }
    let headline: Vec<Series> = r
        .modes()
        .into_iter()
        .filter(|m| m.baseline().is_some())
        .map(|mode| Series {
            label: format!("{} / {}", mode.name(), mode.baseline().unwrap().name()),
            points: r
                .settings
                .rates_mbps
                .iter()
                .filter_map(|rate| {
                    let h = r.headline(mode, "udp", *rate)?;
                    Some((
                        *rate as f64,
                        Spread {
                            median: h.ratio,
                            min: h.low,
                            max: h.high,
                            n: h.per_repetition.len(),
                        },
                    ))
                })
                .collect(),
            off_target: vec![],
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    if !headline.is_empty() {
        files.extend(write(
            dir,
            "headline_ratio_udp",
            &Chart {
                title: "UDP: eBPF / kernel baseline, CPU per packet above the floor (95 % bootstrap interval)",
                x_label: "offered rate, Mbit/s (log)",
                y_label: "ratio (1 = same cost; lower: eBPF cheaper)",
                log_x: true,
                log_y: false,
                series: headline,
            },
        )?);
    }
    if !r.settings.latency_sizes.is_empty() {
        let series = r
            .modes()
            .into_iter()
            .map(|mode| Series {
                label: mode.name().to_string(),
                points: r
                    .settings
                    .latency_sizes
                    .iter()
                    .filter_map(|size| {
                        r.latency_spread(mode, *size, |l| l.p50_us)
                            .map(|s| (*size as f64, s))
                    })
                    .collect(),
                off_target: vec![],
            })
            .filter(|s| !s.points.is_empty())
            .collect();
        files.extend(write(
            dir,
            "latency",
            &Chart {
                title: "TCP request-response latency (p50, half round trip as qperf tcp_lat)",
                x_label: "message size, bytes",
                y_label: "half round trip, µs",
                log_x: false,
                log_y: false,
                series,
            },
        )?);
    }
    if !r.settings.policy_rules.is_empty() {
        let series = |f: fn(&crate::policy_scaling::ScalingPoint) -> f64| {
            r.settings
                .policy_engines
                .iter()
                .map(|engine| Series {
                    label: engine.name().to_string(),
                    points: r
                        .settings
                        .policy_rules
                        .iter()
                        .filter_map(|n| {
                            r.scaling_spread(*engine, *n, f)
                                .map(|s| ((n + 1) as f64, s))
                        })
                        .collect(),
                    off_target: vec![],
                })
                .filter(|s| !s.points.is_empty())
                .collect()
        };
        files.extend(write(
            dir,
            "policy_new_flow_latency",
            &Chart {
                title: "Policy: new-flow request-response p50 vs rules",
                x_label: "rules the traffic does not match, plus one (log)",
                y_label: "round trip, µs",
                log_x: true,
                log_y: false,
                series: series(|p| p.new_flows.p50_us),
            },
        )?);
        files.extend(write(
            dir,
            "policy_cpu_per_gbps",
            &Chart {
                title: "Policy: kernel-level CPU per Gbit/s vs rules (UDP stream)",
                x_label: "rules the traffic does not match, plus one (log)",
                y_label: "softirq CPU per Gbit/s, % of one CPU",
                log_x: true,
                log_y: false,
                series: series(|p| p.cpu_pct_per_gbps),
            },
        )?);
    }
    if !r.settings.service_counts.is_empty() {
        let series = |f: fn(&crate::service_scaling::ServicePoint) -> f64| {
            r.settings
                .service_engines
                .iter()
                .map(|engine| Series {
                    label: engine.name().to_string(),
                    points: r
                        .settings
                        .service_counts
                        .iter()
                        .filter_map(|n| {
                            r.service_spread(*engine, *n, f)
                                .map(|s| ((n + 1) as f64, s))
                        })
                        .collect(),
                    off_target: vec![],
                })
                .filter(|s| !s.points.is_empty())
                .collect()
        };
        let x_label = "services the traffic does not ask for, plus one (log)";
        type ServiceChart = (
            &'static str,
            &'static str,
            &'static str,
            bool,
            fn(&crate::service_scaling::ServicePoint) -> f64,
        );
        let charts: [ServiceChart; 4] = [
            (
                "services_connect_latency",
                "Services: new connection p50 vs services",
                "connect, a byte each way, close: µs",
                false,
                |p| p.connect.p50_us,
            ),
            (
                "services_cpu_per_connection",
                "Services: kernel-level CPU per new connection vs services",
                "softirq CPU per connection, µs",
                false,
                |p| p.cpu_us_per_connection,
            ),
            (
                "services_load_time",
                "Services: loading all of them vs services",
                "ms (log)",
                true,
                |p| p.load_ms,
            ),
            (
                "services_change_time",
                "Services: one endpoint change vs services",
                "ms (log)",
                true,
                |p| p.change_ms,
            ),
        ];
        for (name, title, y_label, log_y, f) in charts {
            files.extend(write(
                dir,
                name,
                &Chart {
                    title,
                    x_label,
                    y_label,
                    log_x: true,
                    log_y,
                    series: series(f),
                },
            )?);
        }
    }
    Ok(files)
}
