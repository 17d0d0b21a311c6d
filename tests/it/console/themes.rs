//! Themes: built-in and from a file, following the terminal; every view's styles per theme
//! and size, as snapshots.

use super::*;

#[test]
fn themes_parse_and_follow_the_terminal() {
    for (name, _) in theme::BUILTIN {
        let t = theme::load(name, ColorDepth::TrueColor).expect("built-in theme");
        assert_eq!(t.name, name);
    }
    assert_eq!(ColorDepth::detect(Some("truecolor"), Some("xterm")), ColorDepth::TrueColor);
    assert_eq!(ColorDepth::detect(None, Some("xterm-256color")), ColorDepth::Ansi256);
    assert_eq!(ColorDepth::detect(None, Some("xterm")), ColorDepth::Ansi16);

    let sixteen = theme::load("dark", ColorDepth::Ansi16).expect("dark");
    for s in [sixteen.base, sixteen.header, sixteen.selected, sixteen.error] {
        for c in [s.fg, s.bg].into_iter().flatten() {
            assert!(!matches!(c, Color::Rgb(..) | Color::Indexed(_)), "{c:?} is not one of the 16 colours");
        }
    }
    let indexed = theme::load("dark", ColorDepth::Ansi256).expect("dark");
    assert!(matches!(indexed.header.bg, Some(Color::Indexed(_))));

    let no_color = ThemeEnv { no_color: true, ..Default::default() };
    assert_eq!(theme::select(None, &no_color).expect("mono").name, "mono");
    assert_eq!(theme::select(Some("light"), &no_color).expect("explicit").name, "light");
    let err = theme::select(Some("neon"), &ThemeEnv::default()).expect_err("unknown theme");
    assert!(format!("{err:#}").contains("dark, light, mono"), "{err:#}");
    assert!(theme::parse("[styles]\nbase = { fg = \"nope\" }", "x", ColorDepth::TrueColor).is_err());
}

#[test]
fn theme_file_by_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("custom.toml");
    std::fs::write(&path, "[styles]\nheader = { fg = \"black\", bg = \"yellow\", mods = [\"bold\"] }\n")
        .expect("write");
    let t = theme::load(path.to_str().expect("utf-8"), ColorDepth::TrueColor).expect("theme file");
    assert_eq!(t.name, "custom");
    assert_eq!(t.header.bg, Some(Color::Yellow));
}

/// Where the colours are, which text snapshots cannot show: every distinct cell style gets a
/// letter, the legend names it after the theme style it equals (over the base, or over a
/// popup's cleared cells) and the screen is drawn in those letters.
fn style_map(buf: &Buffer, theme: &Theme) -> String {
    type StyleKey = (Color, Color, Modifier);
    let resolve = |s: Style| -> StyleKey {
        (s.fg.unwrap_or(Color::Reset), s.bg.unwrap_or(Color::Reset), s.add_modifier - s.sub_modifier)
    };
    let layers = [("", theme.base), ("popup+", Style::reset().patch(theme.popup))];
    // Themes may give several styles the same look (mono does): name them all, `a=b`.
    let names = |k: &StyleKey| {
        layers
            .iter()
            .map(|(layer, under)| {
                let same = theme.styles().into_iter().filter(|(_, s)| resolve(under.patch(*s)) == *k);
                same.map(|(n, _)| format!("{layer}{n}")).collect::<Vec<_>>().join("=")
            })
            .find(|n| !n.is_empty())
            .unwrap_or_else(|| "-".into())
    };
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let mut seen: Vec<StyleKey> = Vec::new();
    let mut grid = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            let c = &buf[(x, y)];
            let k = (c.fg, c.bg, c.modifier);
            let i = seen.iter().position(|s| *s == k).unwrap_or_else(|| {
                seen.push(k);
                seen.len() - 1
            });
            grid.push(letters.get(i).copied().unwrap_or('?'));
        }
        grid.push('\n');
    }
    let colour =
        |c: Color| theme::to_rgb(c).map_or("default".to_string(), |(r, g, b)| format!("#{r:02x}{g:02x}{b:02x}"));
    let mut legend = String::from("styles:\n");
    for (i, k) in seen.iter().enumerate() {
        let mods: Vec<String> = k.2.iter_names().map(|(n, _)| n.to_lowercase()).collect();
        let name = names(k);
        legend += &format!(
            "  {}  {} on {} {:<20} {name}\n",
            letters.get(i).copied().unwrap_or('?'),
            colour(k.0),
            colour(k.1),
            mods.join(",")
        );
    }
    legend + &grid
}

#[test]
fn snapshots_of_every_view_per_theme_and_size() {
    // The dark snapshot holds the text and its styles; the other themes hold only their
    // styles, after checking that a theme changes no character of the screen.
    for (w, h) in [(80, 24), (160, 48)] {
        for name in &SCREENS[..6] {
            let mut dark_text = None;
            for (theme_name, _) in theme::BUILTIN {
                let mut app = screen_app(name);
                app.theme = theme::load(theme_name, ColorDepth::TrueColor).expect("built-in theme");
                let buf = draw(&app, w, h);
                let text = text_of(&buf);
                let styles = style_map(&buf, &app.theme);
                let snap = format!("{name}_{theme_name}_{w}x{h}");
                match &dark_text {
                    None => {
                        snapshot(&snap, format!("{text}\n{styles}"));
                        dark_text = Some(text);
                    }
                    Some(dark) => {
                        assert_eq!(&text, dark, "{snap}: the theme changed the text");
                        snapshot(&snap, styles);
                    }
                }
            }
        }
    }
}
