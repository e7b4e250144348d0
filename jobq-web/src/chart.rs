//! The throughput chart: an inline SVG of the last hour, minute by minute,
//! drawn on the server so the page needs no script.

use std::fmt::Write;

use jobq::MinuteCounts;

const WIDTH: u32 = 600;
const HEIGHT: u32 = 120;
const BAR: u32 = WIDTH / 60;

/// The SVG markup. It holds only numbers and fixed words, no text from
/// the database, so it is inserted unescaped.
pub fn svg(minutes: &[MinuteCounts]) -> String {
    let peak = minutes
        .iter()
        .map(|m| m.completed.saturating_add(m.failed))
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |n: i64| -> u32 {
        let h = (n.max(0) as f64 / peak as f64 * f64::from(HEIGHT)).round();
        // Within 0..=HEIGHT by construction.
        h.clamp(0.0, f64::from(HEIGHT)) as u32
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {h}\" width=\"{WIDTH}\" height=\"{h}\" \
         role=\"img\" aria-label=\"jobs finished per minute over the last hour\">",
        h = HEIGHT + 16
    );
    for (i, m) in minutes.iter().enumerate() {
        let x = u32::try_from(i).unwrap_or(0) * BAR;
        let done = scale(m.completed);
        let failed = scale(m.failed);
        let _ = write!(
            s,
            "<g><title>{ago} min ago: {c} completed, {f} failed</title>\
             <rect class=\"done\" x=\"{x}\" y=\"{yd}\" width=\"{w}\" height=\"{done}\"/>\
             <rect class=\"failed\" x=\"{x}\" y=\"{yf}\" width=\"{w}\" height=\"{failed}\"/></g>",
            ago = m.minutes_ago,
            c = m.completed,
            f = m.failed,
            yd = HEIGHT - done,
            yf = HEIGHT.saturating_sub(done + failed),
            w = BAR - 1,
        );
    }
    let _ = write!(
        s,
        "<line class=\"axis\" x1=\"0\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\"/>\
         <text x=\"0\" y=\"{y}\">60 min ago</text>\
         <text x=\"{WIDTH}\" y=\"{y}\" text-anchor=\"end\">now</text>\
         <text x=\"{mid}\" y=\"{y}\" text-anchor=\"middle\">peak {peak}/min</text></svg>",
        y = HEIGHT + 13,
        mid = WIDTH / 2,
    );
    s
}
