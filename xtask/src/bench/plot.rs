//! Grouped bar charts written directly as SVG (no plotting dependency).
use std::fmt::Write as _;

pub struct Group {
    pub label: String,
    /// One value per series, in the chart's series order; None leaves a gap.
    pub values: Vec<Option<f64>>,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub series: &'a [&'a str],
    pub groups: Vec<Group>,
    /// A dashed horizontal line (the baseline), with its label.
    pub reference: Option<(f64, &'a str)>,
    /// The axis stops here: taller bars are cut and marked, so that one outlier (a noisy p99)
    /// does not flatten every other bar.
    pub y_max: f64,
}

const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 80.0;

impl Chart<'_> {
    pub fn to_svg(&self) -> String {
        let top_value = self.top_value();
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"24\" font-size=\"16\" text-anchor=\"middle\">{}</text>\n",
            WIDTH / 2.0,
            escape(self.title)
        );
        self.axis(&mut svg, top_value);
        self.bars(&mut svg, top_value);
        if let Some((value, label)) = self.reference {
            let y = self.y(value, top_value);
            let _ = writeln!(
                svg,
                "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"black\" \
                 stroke-dasharray=\"6 4\"/>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                WIDTH - RIGHT,
                WIDTH - RIGHT,
                y - 4.0,
                escape(label)
            );
        }
        self.legend(&mut svg);
        svg.push_str("</svg>\n");
        svg
    }

    fn top_value(&self) -> f64 {
        let highest = (self.groups.iter())
            .flat_map(|group| group.values.iter().flatten())
            .chain(self.reference.iter().map(|(value, _)| value))
            .fold(0.0_f64, |a, &b| a.max(b));
        nice_ceiling(highest * 1.1).min(self.y_max)
    }

    fn y(&self, value: f64, top_value: f64) -> f64 {
        let plot_height = HEIGHT - TOP - BOTTOM;
        TOP + plot_height * (1.0 - value / top_value)
    }

    fn axis(&self, svg: &mut String, top_value: f64) {
        for step in 0..=5 {
            let value = top_value * f64::from(step) / 5.0;
            let y = self.y(value, top_value);
            let _ = writeln!(
                svg,
                "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                format_tick(value)
            );
        }
        let _ = writeln!(
            svg,
            "<text transform=\"translate(16 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            TOP + (HEIGHT - TOP - BOTTOM) / 2.0,
            escape(self.y_label)
        );
    }

    fn bars(&self, svg: &mut String, top_value: f64) {
        let group_width = (WIDTH - LEFT - RIGHT) / self.groups.len().max(1) as f64;
        let bar_width = group_width * 0.8 / self.series.len().max(1) as f64;
        for (g, group) in self.groups.iter().enumerate() {
            let x0 = LEFT + group_width * g as f64 + group_width * 0.1;
            for (s, value) in group.values.iter().enumerate() {
                let Some(value) = value else { continue };
                let shown = value.min(top_value);
                let (x, y) = (x0 + bar_width * s as f64, self.y(shown, top_value));
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\">\
                     <title>{}: {}</title></rect>\n\
                     <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\">{}{}</text>",
                    bar_width * 0.95,
                    self.y(0.0, top_value) - y,
                    COLORS[s % COLORS.len()],
                    escape(self.series[s]),
                    format_tick(*value),
                    x + bar_width * 0.475,
                    y - 3.0,
                    if *value > top_value { "▲" } else { "" },
                    format_short(*value),
                );
            }
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x0 + group_width * 0.4,
                HEIGHT - BOTTOM + 18.0,
                escape(&group.label)
            );
        }
    }

    fn legend(&self, svg: &mut String) {
        for (s, name) in self.series.iter().enumerate() {
            let x = LEFT + 150.0 * s as f64;
            let y = HEIGHT - 30.0;
            let _ = writeln!(
                svg,
                "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
                 <text x=\"{}\" y=\"{y}\">{}</text>",
                y - 10.0,
                COLORS[s % COLORS.len()],
                x + 16.0,
                escape(name)
            );
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|&candidate| candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

/// A bar's label: three significant figures at most.
fn format_short(value: f64) -> String {
    match value {
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        v => format!("{v:.2}"),
    }
}

fn format_tick(value: f64) -> String {
    if value >= 100.0 || value == value.round() {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(1.1), 2.0);
        assert_eq!(nice_ceiling(110.0), 200.0);
        assert_eq!(nice_ceiling(4.5), 5.0);
    }

    #[test]
    fn chart_has_a_bar_per_value_and_escapes_labels() {
        let chart = Chart {
            title: "a <b>",
            y_label: "%",
            series: &["H1", "NAT"],
            groups: vec![
                Group {
                    label: "RR & co".into(),
                    values: vec![Some(99.0), Some(80.0)],
                },
                Group {
                    label: "stream".into(),
                    values: vec![Some(100.0), None],
                },
            ],
            reference: Some((100.0, "H0")),
            y_max: 150.0,
        };
        let svg = chart.to_svg();
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(!svg.contains('▲'), "no bar is cut below the axis' end");
        assert!(svg.contains("a &lt;b&gt;") && svg.contains("RR &amp; co"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }

    #[test]
    fn outliers_are_cut_and_marked() {
        let chart = Chart {
            title: "t",
            y_label: "%",
            series: &["H1"],
            groups: vec![Group {
                label: "p99".into(),
                values: vec![Some(480.0)],
            }],
            reference: None,
            y_max: 150.0,
        };
        let svg = chart.to_svg();
        assert!(svg.contains("▲480"));
        assert!(svg.contains(">150</text>"), "the axis ends at y_max");
    }
}
