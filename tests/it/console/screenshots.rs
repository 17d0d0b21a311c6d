//! SVG screenshots of every view, drawn from the TestBackend buffer.

use super::*;

/// One cell of an SVG screenshot: 14px monospace advances about 0.6em.
const CELL_W: f32 = 8.4;
const CELL_H: f32 = 17.0;

/// `#rrggbb` of a colour; `Reset` (the terminal's default) becomes `default`.
fn hex(c: Color, default: Color) -> String {
    let (r, g, b) = theme::to_rgb(c).or_else(|| theme::to_rgb(default)).unwrap_or((0, 0, 0));
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// A screen as SVG. Each run of equal-styled cells in a row becomes a background rect and a
/// text stretched to exactly the run's cells, so the grid holds whatever font the viewer has.
/// `base` stands in for the terminal's default colours (`Color::Reset`).
fn buffer_to_svg(buf: &Buffer, base: Style) -> String {
    let (dfg, dbg) = (base.fg.unwrap_or(Color::Gray), base.bg.unwrap_or(Color::Black));
    let (w, h) = (buf.area.width, buf.area.height);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{:.0}\" \
         font-family=\"'DejaVu Sans Mono', Menlo, Consolas, monospace\" font-size=\"14\" xml:space=\"preserve\">\n\
         <style>text {{ white-space: pre }}</style>\n<rect width=\"100%\" height=\"100%\" fill=\"{}\"/>\n",
        f32::from(w) * CELL_W,
        f32::from(h) * CELL_H,
        hex(dbg, dbg)
    );
    for y in 0..h {
        let mut x = 0;
        while x < w {
            let first = &buf[(x, y)];
            let (start, style) = (x, (first.fg, first.bg, first.modifier));
            let mut text = String::new();
            while x < w && (buf[(x, y)].fg, buf[(x, y)].bg, buf[(x, y)].modifier) == style {
                text.push_str(buf[(x, y)].symbol());
                x += 1;
            }
            let (mut fg, mut bg, m) = (hex(style.0, dfg), hex(style.1, dbg), style.2);
            if m.contains(Modifier::REVERSED) {
                std::mem::swap(&mut fg, &mut bg);
            }
            let (px, py, width) = (f32::from(start) * CELL_W, f32::from(y) * CELL_H, f32::from(x - start) * CELL_W);
            if bg != hex(dbg, dbg) {
                svg += &format!(
                    "<rect x=\"{px:.1}\" y=\"{py:.1}\" width=\"{width:.1}\" height=\"{CELL_H}\" fill=\"{bg}\"/>\n"
                );
            }
            if text.trim().is_empty() {
                continue;
            }
            let mut attrs = format!("fill=\"{fg}\"");
            for (flag, attr) in [
                (Modifier::BOLD, " font-weight=\"bold\""),
                (Modifier::ITALIC, " font-style=\"italic\""),
                (Modifier::DIM, " fill-opacity=\"0.6\""),
                (Modifier::UNDERLINED, " text-decoration=\"underline\""),
                (Modifier::CROSSED_OUT, " text-decoration=\"line-through\""),
            ] {
                if m.contains(flag) {
                    attrs += attr;
                }
            }
            let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            svg += &format!(
                "<text x=\"{px:.1}\" y=\"{:.1}\" textLength=\"{width:.1}\" lengthAdjust=\"spacingAndGlyphs\" {attrs}>{escaped}</text>\n",
                py + CELL_H * 0.78
            );
        }
    }
    svg + "</svg>\n"
}

/// Every view, the help overlay, the reset confirmation and the replay form as SVG in the dark theme, from the
/// snapshot fixtures; `DELTALINK_SAVE_SCREENSHOTS=1` refreshes screenshots/*.svg.
#[test]
fn screenshots_of_every_view_as_svg() {
    let dark = theme::load("dark", ColorDepth::TrueColor).expect("dark");
    for name in SCREENS {
        let mut app = screen_app(name);
        app.theme = dark.clone();
        let svg = buffer_to_svg(&draw(&app, 120, 32), dark.base);
        let title = match View::ALL.iter().find(|v| v.title().to_lowercase().starts_with(name)) {
            Some(v) => format!("{} {}", v.index() + 1, v.title()),
            None if name == "help" => "Keys: Pipelines".into(),
            None if name == "replay_form" => "Replay enriched_publications".into(),
            None if name == "consumers" => "2 Pipelines".into(),
            None => "Confirm".into(),
        };
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"), "{name}: not an SVG document");
        assert!(svg.contains(&title), "{name}: no `{title}` in the SVG");
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count(), "{name}: unbalanced text");
        assert!(svg.contains("fill=\"#1e2030\""), "{name}: the dark theme's background is missing");
        save_screenshot(&format!("{name}.svg"), &svg);
    }
}
