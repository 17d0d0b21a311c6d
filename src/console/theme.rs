//! Console themes: TOML files of named styles. Three are built in and embedded, so the binary
//! works from any directory; `--theme PATH` loads any other file of the same shape.
//! Colours are reduced to what the terminal can show, and NO_COLOR selects the mono theme.

use std::path::Path;
use std::str::FromStr;

use color_eyre::eyre::{eyre, Result, WrapErr};
use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// The built-in themes, by name; `dark` is the default.
pub const BUILTIN: [(&str, &str); 3] = [
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    ("mono", include_str!("../../themes/mono.toml")),
];

/// Declares the theme's styles once: the public [`Theme`], the TOML table and the conversion.
macro_rules! theme_styles {
    ($($field:ident: $doc:literal),* $(,)?) => {
        /// The styles the console draws with.
        #[derive(Clone, Debug, PartialEq)]
        pub struct Theme {
            pub name: String,
            $(#[doc = $doc] pub $field: Style,)*
        }

        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields, default)]
        struct Styles {
            $($field: StyleSpec,)*
        }

        impl Styles {
            fn build(self, name: String, depth: ColorDepth) -> Result<Theme> {
                Ok(Theme { name, $($field: self.$field.style(stringify!($field), depth)?,)* })
            }
        }

        impl Theme {
            /// Every style plain: the fallback should an embedded theme ever fail to parse.
            fn plain(name: &str) -> Theme {
                Theme { name: name.to_string(), $($field: Style::default(),)* }
            }

            /// Every style with its name, in declaration order (for tools that describe a screen).
            pub fn styles(&self) -> Vec<(&'static str, Style)> {
                vec![$((stringify!($field), self.$field),)*]
            }
        }
    };
}

theme_styles! {
    base: "Everything not styled otherwise (and the background).",
    header: "The top line.",
    tab: "View names in the tab line.",
    tab_active: "The current view's name.",
    border: "Pane borders.",
    title: "Pane titles.",
    column: "Table column headers.",
    selected: "The selected row.",
    dim: "Secondary text.",
    ok: "Success (runs written, lag zero).",
    warn: "Attention (lag, pending intents, warnings).",
    error: "Failures.",
    key: "Key names in the key bar.",
    key_label: "What a key does, in the key bar.",
    badge: "The [RO] badge.",
    flash: "The flash message.",
    popup: "Popups (help, confirmations, forms).",
    gauge: "The progress gauge of running writes.",
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: Option<String>,
    #[serde(default)]
    styles: Styles,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StyleSpec {
    fg: Option<String>,
    bg: Option<String>,
    #[serde(default)]
    mods: Vec<String>,
}

impl StyleSpec {
    fn style(&self, field: &str, depth: ColorDepth) -> Result<Style> {
        let color = |s: &String| {
            Color::from_str(s)
                .map(|c| depth.adapt(c))
                .map_err(|_| eyre!("style `{field}`: `{s}` is not a colour (use a name, #rrggbb or 0-255)"))
        };
        let mut style = Style::default();
        if let Some(fg) = &self.fg {
            style = style.fg(color(fg)?);
        }
        if let Some(bg) = &self.bg {
            style = style.bg(color(bg)?);
        }
        for m in &self.mods {
            style = style.add_modifier(modifier(m).ok_or_else(|| eyre!("style `{field}`: unknown modifier `{m}`"))?);
        }
        Ok(style)
    }
}

fn modifier(name: &str) -> Option<Modifier> {
    Some(match name.to_ascii_lowercase().as_str() {
        "bold" => Modifier::BOLD,
        "dim" => Modifier::DIM,
        "italic" => Modifier::ITALIC,
        "underlined" | "underline" => Modifier::UNDERLINED,
        "reversed" | "reverse" => Modifier::REVERSED,
        "crossed_out" => Modifier::CROSSED_OUT,
        _ => return None,
    })
}

/// How many colours the terminal shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorDepth {
    TrueColor,
    Ansi256,
    Ansi16,
}

impl ColorDepth {
    /// Truecolor only when COLORTERM says so; 256 colours when TERM says so; else the 16 every
    /// terminal has (an unsupported RGB escape shows as garbage or nothing at all).
    pub fn detect(colorterm: Option<&str>, term: Option<&str>) -> ColorDepth {
        let ct = colorterm.unwrap_or_default().to_ascii_lowercase();
        if ct == "truecolor" || ct == "24bit" {
            ColorDepth::TrueColor
        } else if term.unwrap_or_default().contains("256color") {
            ColorDepth::Ansi256
        } else {
            ColorDepth::Ansi16
        }
    }

    pub fn adapt(self, c: Color) -> Color {
        match (self, c) {
            (ColorDepth::Ansi256, Color::Rgb(r, g, b)) => Color::Indexed(rgb_to_256(r, g, b)),
            (ColorDepth::Ansi16, Color::Rgb(r, g, b)) => nearest_16((r, g, b)),
            (ColorDepth::Ansi16, Color::Indexed(i)) if i >= 16 => nearest_16(indexed_rgb(i)),
            _ => c,
        }
    }
}

/// xterm's default RGB values of the 16 ANSI colours, in index order.
const ANSI16: [(Color, (u8, u8, u8)); 16] = [
    (Color::Black, (0, 0, 0)),
    (Color::Red, (205, 0, 0)),
    (Color::Green, (0, 205, 0)),
    (Color::Yellow, (205, 205, 0)),
    (Color::Blue, (0, 0, 238)),
    (Color::Magenta, (205, 0, 205)),
    (Color::Cyan, (0, 205, 205)),
    (Color::Gray, (229, 229, 229)),
    (Color::DarkGray, (127, 127, 127)),
    (Color::LightRed, (255, 0, 0)),
    (Color::LightGreen, (0, 255, 0)),
    (Color::LightYellow, (255, 255, 0)),
    (Color::LightBlue, (92, 92, 255)),
    (Color::LightMagenta, (255, 0, 255)),
    (Color::LightCyan, (0, 255, 255)),
    (Color::White, (255, 255, 255)),
];

const CUBE: [u8; 6] = [0, 95, 135, 175, 215, 255];

fn distance(a: (u8, u8, u8), b: (u8, u8, u8)) -> u32 {
    let d = |x: u8, y: u8| (i32::from(x) - i32::from(y)).unsigned_abs().pow(2);
    d(a.0, b.0) + d(a.1, b.1) + d(a.2, b.2)
}

fn nearest_16(rgb: (u8, u8, u8)) -> Color {
    ANSI16.iter().min_by_key(|(_, p)| distance(rgb, *p)).map_or(Color::Reset, |(c, _)| *c)
}

fn cube_level(v: u8) -> usize {
    (0..CUBE.len()).min_by_key(|&i| (i32::from(CUBE[i]) - i32::from(v)).abs()).unwrap_or(0)
}

/// The nearest xterm-256 colour: the 6×6×6 cube or the 24-step grey ramp, whichever is closer.
fn rgb_to_256(r: u8, g: u8, b: u8) -> u8 {
    let (ri, gi, bi) = (cube_level(r), cube_level(g), cube_level(b));
    let cube = 16 + 36 * ri + 6 * gi + bi;
    let avg = (u32::from(r) + u32::from(g) + u32::from(b)) / 3;
    let grey_step = (avg.saturating_sub(8) / 10).min(23) as u8;
    let grey = 232 + grey_step;
    if distance((r, g, b), indexed_rgb(grey)) < distance((r, g, b), indexed_rgb(cube as u8)) {
        grey
    } else {
        cube as u8
    }
}

/// The RGB a terminal shows for a colour (xterm's palette); `None` for `Reset`, the terminal's
/// own default.
pub fn to_rgb(c: Color) -> Option<(u8, u8, u8)> {
    match c {
        Color::Rgb(r, g, b) => Some((r, g, b)),
        Color::Indexed(i) => Some(indexed_rgb(i)),
        named => ANSI16.iter().find(|(n, _)| *n == named).map(|(_, rgb)| *rgb),
    }
}

fn indexed_rgb(i: u8) -> (u8, u8, u8) {
    match i {
        0..=15 => ANSI16[usize::from(i)].1,
        16..=231 => {
            let n = usize::from(i - 16);
            (CUBE[n / 36], CUBE[(n / 6) % 6], CUBE[n % 6])
        }
        _ => {
            let v = 8 + 10 * (i - 232);
            (v, v, v)
        }
    }
}

/// The environment that decides the theme, read once (tests pass their own).
#[derive(Clone, Debug, Default)]
pub struct ThemeEnv {
    pub no_color: bool,
    pub colorterm: Option<String>,
    pub term: Option<String>,
}

impl ThemeEnv {
    pub fn from_process() -> ThemeEnv {
        ThemeEnv {
            // https://no-color.org: present and not empty.
            no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            colorterm: std::env::var("COLORTERM").ok(),
            term: std::env::var("TERM").ok(),
        }
    }

    pub fn depth(&self) -> ColorDepth {
        ColorDepth::detect(self.colorterm.as_deref(), self.term.as_deref())
    }
}

/// The theme to start with: an explicit `--theme` wins, then NO_COLOR (mono), else dark.
pub fn select(spec: Option<&str>, env: &ThemeEnv) -> Result<Theme> {
    match spec {
        Some(s) => load(s, env.depth()),
        None if env.no_color => load("mono", env.depth()),
        None => load("dark", env.depth()),
    }
}

/// A built-in theme by name, or a theme file by path.
pub fn load(spec: &str, depth: ColorDepth) -> Result<Theme> {
    if let Some((name, text)) = BUILTIN.iter().find(|(n, _)| *n == spec) {
        return parse(text, name, depth);
    }
    let path = Path::new(spec);
    if !path.is_file() {
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        return Err(eyre!("unknown theme `{spec}`: use one of {} or a path to a theme TOML file", names.join(", ")));
    }
    let text = std::fs::read_to_string(path).wrap_err_with(|| format!("cannot read theme file {}", path.display()))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| spec.to_string());
    parse(&text, &stem, depth).wrap_err_with(|| format!("theme file {}", path.display()))
}

/// Parse theme TOML; styles not given are plain.
pub fn parse(text: &str, default_name: &str, depth: ColorDepth) -> Result<Theme> {
    let file: ThemeFile = toml::from_str(text).map_err(|e| eyre!("invalid theme: {}", e.to_string().trim_end()))?;
    let name = file.name.unwrap_or_else(|| default_name.to_string());
    file.styles.build(name, depth)
}

impl Default for Theme {
    /// The dark theme at full colour (what `App::new` starts with).
    fn default() -> Theme {
        parse(BUILTIN[0].1, "dark", ColorDepth::TrueColor).unwrap_or_else(|_| Theme::plain("plain"))
    }
}
