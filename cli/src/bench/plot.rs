//! `qwenmk bench --plot FILE.svg`: tok/s (with the roofline and any peers) and % of peak
//! bandwidth against depth, as an SVG fit for a README. plotters' SVG backend writes text as
//! `<text>` elements, so no font library is needed.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;

use super::report::Report;

const WIDTH: u32 = 960;
const HEIGHT_ONE: u32 = 460;
const HEIGHT_TWO: u32 = 760;
const QWENMK: RGBColor = RGBColor(31, 119, 180);
const ROOFLINE: RGBColor = RGBColor(110, 110, 110);
const PEER_COLORS: [RGBColor; 4] = [
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];
const FONT: &str = "sans-serif";

/// Draws `report` into `path` (written only once the whole image is drawn).
pub fn write_svg(report: &Report, path: &Path) -> Result<()> {
    let svg = render(report)?;
    std::fs::write(path, svg).with_context(|| format!("cannot write the plot {}", path.display()))
}

/// The plot as SVG text.
pub fn render(report: &Report) -> Result<String> {
    let has_peak = report.results.iter().any(|r| r.percent_of_peak.is_some());
    let height = if has_peak { HEIGHT_TWO } else { HEIGHT_ONE };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        draw(report, &root, has_peak).map_err(|e| anyhow!("drawing the plot failed: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("drawing the plot failed: {e}"))?;
    }
    Ok(svg)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error + 'static>>;

fn draw(report: &Report, root: &Area<'_>, has_peak: bool) -> DrawResult {
    root.fill(&WHITE)?;
    let device = match &report.gpu {
        Some(gpu) => gpu.name.clone(),
        None => report.host.cpu.clone(),
    };
    let title = format!(
        "qwenmk decode: {}, {} engine on {device}",
        report.model.name, report.engine
    );
    let root = root.titled(&title, (FONT, 22).into_font().color(&BLACK))?;
    let (top, bottom) = if has_peak {
        let (top, bottom) = root.split_vertically(HEIGHT_TWO as i32 * 56 / 100);
        (top, Some(bottom))
    } else {
        (root, None)
    };
    draw_throughput(report, &top, bottom.is_none())?;
    if let Some(bottom) = bottom {
        draw_percent_of_peak(report, &bottom)?;
    }
    Ok(())
}

/// Depth i sits at x = i: the depths (0, 128, …, 32768) are evenly spaced, labelled by value.
/// With at most `count` labels asked for, plotters puts its ticks on the integers.
fn depth_axis(count: usize) -> std::ops::Range<f64> {
    -0.4f64..(count as f64 - 0.6)
}

fn depth_label(report: &Report, x: f64) -> String {
    let i = x.round();
    if (x - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    report
        .results
        .get(i as usize)
        .map_or_else(String::new, |r| r.depth.to_string())
}

fn draw_throughput(report: &Report, area: &Area<'_>, x_caption: bool) -> DrawResult {
    let n = report.results.len();
    let mut top = 0.0f64;
    for r in &report.results {
        top = top.max(r.tok_s_mean + r.tok_s_sd.unwrap_or(0.0));
        top = top.max(r.roofline_tok_s.unwrap_or(0.0));
        for p in &r.peers {
            top = top.max(p.tok_s_mean.unwrap_or(0.0));
        }
    }
    // Headroom above the highest point for its label and the legend.
    let top = if top > 0.0 && top.is_finite() {
        top * 1.35
    } else {
        1.0
    };
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(if x_caption { 44 } else { 28 })
        .y_label_area_size(72)
        .caption("decode throughput", (FONT, 17))
        .build_cartesian_2d(depth_axis(n), 0f64..top)?;
    let x_label = |x: &f64| depth_label(report, *x);
    let y_label = |y: &f64| number(*y, top);
    let mut mesh = chart.configure_mesh();
    mesh.x_labels(n)
        .x_label_formatter(&x_label)
        .y_label_formatter(&y_label)
        .y_desc("tokens / s")
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 13));
    if x_caption {
        mesh.x_desc("KV-cache depth (positions)");
    }
    mesh.draw()?;

    let xs = || (0..n).map(|i| i as f64);
    if report.results.iter().any(|r| r.roofline_tok_s.is_some()) {
        let points: Vec<(f64, f64)> = xs()
            .zip(&report.results)
            .filter_map(|(x, r)| r.roofline_tok_s.map(|t| (x, t)))
            .collect();
        chart
            .draw_series(DashedLineSeries::new(
                points,
                8,
                6,
                ROOFLINE.stroke_width(2),
            ))?
            .label("bandwidth roofline")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], ROOFLINE.stroke_width(2)));
    }

    for (k, (name, label)) in report
        .peers
        .iter()
        .flat_map(|p| p.columns.iter())
        .enumerate()
    {
        let color = PEER_COLORS[k % PEER_COLORS.len()];
        let points: Vec<(f64, f64)> = xs()
            .zip(&report.results)
            .filter_map(|(x, r)| {
                r.peers
                    .iter()
                    .find(|p| &p.name == name)
                    .and_then(|p| p.tok_s_mean)
                    .map(|t| (x, t))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|(x, y)| {
            EmptyElement::at((x, y)) + Rectangle::new([(-4, -4), (4, 4)], color.filled())
        }))?;
    }

    let label = format!("qwenmk ({})", report.engine);
    let means: Vec<(f64, f64)> = xs()
        .zip(&report.results)
        .map(|(x, r)| (x, r.tok_s_mean))
        .collect();
    chart
        .draw_series(LineSeries::new(means.clone(), QWENMK.stroke_width(3)))?
        .label(label)
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], QWENMK.stroke_width(3)));
    chart.draw_series(xs().zip(&report.results).filter_map(|(x, r)| {
        r.tok_s_sd.map(|sd| {
            ErrorBar::new_vertical(
                x,
                r.tok_s_mean - sd,
                r.tok_s_mean,
                r.tok_s_mean + sd,
                QWENMK.stroke_width(2),
                10,
            )
        })
    }))?;
    chart.draw_series(
        means
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 5, QWENMK.filled())),
    )?;
    chart.draw_series(means.iter().map(|&(x, y)| {
        EmptyElement::at((x, y))
            + Text::new(
                number(y, y),
                (8, -20),
                (FONT, 13).into_font().color(&QWENMK),
            )
    }))?;

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

fn draw_percent_of_peak(report: &Report, area: &Area<'_>) -> DrawResult {
    let n = report.results.len();
    let highest = report
        .results
        .iter()
        .filter_map(|r| r.percent_of_peak)
        .fold(100.0f64, f64::max);
    let peak = report
        .peak_bandwidth
        .as_ref()
        .map_or_else(String::new, |p| {
            format!(" of {:.2} TB/s ({})", p.bytes_per_s / 1e12, p.source)
        });
    let mut chart = ChartBuilder::on(area)
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .caption(format!("share of peak bandwidth{peak}"), (FONT, 15))
        .build_cartesian_2d(depth_axis(n), 0f64..highest * 1.08)?;
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| depth_label(report, *x))
        .y_label_formatter(&|y| format!("{y:.0} %"))
        .x_desc("KV-cache depth (positions)")
        .y_desc("% of peak")
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.08))
        .axis_desc_style((FONT, 15))
        .label_style((FONT, 13))
        .draw()?;
    chart.draw_series(DashedLineSeries::new(
        [(-0.4, 100.0), (n as f64 - 0.6, 100.0)],
        8,
        6,
        ROOFLINE.stroke_width(2),
    ))?;
    let points: Vec<(f64, f64)> = report
        .results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.percent_of_peak.map(|p| (i as f64, p)))
        .collect();
    chart.draw_series(LineSeries::new(points.clone(), QWENMK.stroke_width(3)))?;
    chart.draw_series(
        points
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 5, QWENMK.filled())),
    )?;
    chart.draw_series(points.iter().map(|&(x, y)| {
        EmptyElement::at((x, y))
            + Text::new(
                format!("{y:.1} %"),
                (8, -20),
                (FONT, 13).into_font().color(&QWENMK),
            )
    }))?;
    Ok(())
}

/// `value` with as many decimals as a scale of `scale` needs: 2,612 / 16.8 / 0.42.
fn number(value: f64, scale: f64) -> String {
    let scale = scale.abs();
    if scale >= 100.0 {
        format!("{value:.0}")
    } else if scale >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::sample_report;

    #[test]
    fn one_panel_without_a_peak_two_with() {
        let cpu = render(&sample_report(false, false)).unwrap();
        assert!(cpu.starts_with("<svg"), "{}", &cpu[..40]);
        assert!(cpu.contains("tokens / s") && !cpu.contains("% of peak"));
        let gpu = render(&sample_report(true, true)).unwrap();
        for text in [
            "tokens / s",
            "% of peak",
            "bandwidth roofline",
            "HF eager bf16",
            "32768",
        ] {
            assert!(gpu.contains(text), "no {text} in the SVG");
        }
        // Look at it: QWENMK_PLOT_PREVIEW=/tmp/plot.svg cargo test -p qwenmk plot
        if let Some(path) = std::env::var_os("QWENMK_PLOT_PREVIEW") {
            std::fs::write(path, gpu).unwrap();
        }
    }
}
