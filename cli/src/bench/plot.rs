//! `qwenmk bench --plot FILE.svg|FILE.png`: tok/s (with the roofline and any peers) and % of
//! peak bandwidth against depth, fit for a README. The extension picks the format: SVG (text as
//! `<text>` elements) or PNG (an RGB bitmap). Text is measured, and drawn into PNGs, with the
//! DejaVu Sans font built into the binary, so no system font library is needed. The file is
//! written all at once (a partial file renamed into place).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::Report;

/// The image formats `--plot` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotFormat {
    Svg,
    Png,
}

impl PlotFormat {
    /// The format `path`'s extension names (any case); anything else is an error that says
    /// which extensions work.
    pub fn of(path: &Path) -> Result<Self> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("svg") => Ok(PlotFormat::Svg),
            Some("png") => Ok(PlotFormat::Png),
            _ => bail!(
                "--plot {}: the plot is written as SVG or PNG, chosen by the file's extension; \
                 name it .svg or .png",
                path.display()
            ),
        }
    }
}

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

/// Draws `report` into `path` in the format of its extension. The file appears only once the
/// whole image is encoded; an interrupted run leaves nothing.
pub fn write_plot(report: &Report, path: &Path) -> Result<()> {
    let bytes = match PlotFormat::of(path)? {
        PlotFormat::Svg => render(report)?.into_bytes(),
        PlotFormat::Png => render_png(report)?,
    };
    qwenmk_weights::partial::write_atomic(path, &bytes)
        .with_context(|| format!("cannot write the plot {}", path.display()))
}

/// The plot as SVG text.
pub fn render(report: &Report) -> Result<String> {
    register_font()?;
    let (size, has_peak) = size_of(report);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(report, &root, has_peak).map_err(|e| anyhow!("drawing the plot failed: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("drawing the plot failed: {e}"))?;
    }
    Ok(svg)
}

/// The plot as a PNG file's bytes (8-bit RGB).
pub fn render_png(report: &Report) -> Result<Vec<u8>> {
    register_font()?;
    let ((width, height), has_peak) = size_of(report);
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        draw(report, &root, has_peak).map_err(|e| anyhow!("drawing the plot failed: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("drawing the plot failed: {e}"))?;
    }
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&pixels))
        .context("encoding the plot as PNG failed")?;
    Ok(png)
}

/// The image size: one panel, or two when there is a peak bandwidth to compare with.
fn size_of(report: &Report) -> ((u32, u32), bool) {
    let has_peak = report.results.iter().any(|r| r.percent_of_peak.is_some());
    let height = if has_peak { HEIGHT_TWO } else { HEIGHT_ONE };
    ((WIDTH, height), has_peak)
}

/// DejaVu Sans, built in, as the plot's only font (every style falls back to it).
fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if *ok {
        Ok(())
    } else {
        bail!("the built-in plot font does not load; a qwenmk bug")
    }
}

type Area<'a, DB> = DrawingArea<DB, Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error + 'static>>;

fn draw<DB: DrawingBackend>(report: &Report, root: &Area<'_, DB>, has_peak: bool) -> DrawResult
where
    DB::ErrorType: 'static,
{
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

fn draw_throughput<DB: DrawingBackend>(
    report: &Report,
    area: &Area<'_, DB>,
    x_caption: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
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

fn draw_percent_of_peak<DB: DrawingBackend>(report: &Report, area: &Area<'_, DB>) -> DrawResult
where
    DB::ErrorType: 'static,
{
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
        // Look at it: QWENMK_PLOT_PREVIEW=/tmp/plot cargo test -p qwenmk plot (.svg and .png)
        if let Some(path) = std::env::var_os("QWENMK_PLOT_PREVIEW") {
            let path = std::path::PathBuf::from(path);
            std::fs::write(path.with_extension("svg"), gpu).unwrap();
            let png = render_png(&sample_report(true, true)).unwrap();
            std::fs::write(path.with_extension("png"), png).unwrap();
        }
    }

    #[test]
    fn png_is_a_png_of_the_plot_size_with_text_drawn() {
        let png = render_png(&sample_report(true, true)).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{:?}", &png[..8]);
        let decoder = png::Decoder::new(std::io::Cursor::new(&png));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).unwrap();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT_TWO));
        // The title is black text on white: its band holds dark pixels.
        let dark = pixels[..(WIDTH * 30 * 3) as usize]
            .chunks(3)
            .filter(|p| p.iter().all(|&c| c < 80))
            .count();
        assert!(dark > 200, "only {dark} dark pixels where the title is");
    }

    #[test]
    fn the_extension_picks_the_format_and_others_are_refused() {
        assert_eq!(
            PlotFormat::of(Path::new("a/b.svg")).unwrap(),
            PlotFormat::Svg
        );
        assert_eq!(PlotFormat::of(Path::new("b.PNG")).unwrap(), PlotFormat::Png);
        for bad in ["b.jpg", "b", "b.svg.tmp"] {
            let err = PlotFormat::of(Path::new(bad)).unwrap_err().to_string();
            assert!(err.contains(".svg or .png") && err.contains(bad), "{err}");
        }
    }
}
