//! QR codes of tickets (group tickets, share tickets), for someone standing next to you
//! with a phone: as inline SVG for the proxy's pages (self-contained: no script, no
//! external resource) and as text for a terminal, two modules per character cell
//! (`▀`, `▄`, `█`, space), with the quiet zone the standard asks for around it.

use qrcode::render::{svg, unicode};
use qrcode::QrCode;

/// A QR code of `text` as an inline `<svg>` element, at least `min_px` pixels wide; empty
/// when `text` is too long for a QR code.
pub fn svg(text: &str, min_px: u32) -> String {
    let Ok(code) = QrCode::new(text.as_bytes()) else {
        return String::new();
    };
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(min_px, min_px)
        .build();
    // The renderer writes a standalone document; inside HTML the element is enough.
    match image.find("<svg") {
        Some(at) => image[at..].to_string(),
        None => image,
    }
}

/// A QR code of `text` for a terminal, one line per two rows of modules, the quiet zone
/// included; `None` when `text` is too long for a QR code. With `ansi`, each line is drawn
/// black on white whatever the terminal's colours (a scanner wants dark modules on a light
/// ground, and a dark terminal would otherwise show the code inverted); without, block
/// characters are the dark modules.
pub fn terminal(text: &str, ansi: bool) -> Option<String> {
    let code = QrCode::new(text.as_bytes()).ok()?;
    let image = code.render::<unicode::Dense1x2>().quiet_zone(true).build();
    if !ansi {
        return Some(image);
    }
    let mut out = String::with_capacity(image.len() * 2);
    for line in image.lines() {
        // Black on bright white, then back to the terminal's own colours.
        out.push_str("\x1b[30;107m");
        out.push_str(line);
        out.push_str("\x1b[0m\n");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_terminal_code_is_square_with_its_quiet_zone() {
        let text = "meshshare".to_string() + &"a".repeat(200);
        let plain = super::terminal(&text, false).unwrap();
        let lines: Vec<&str> = plain.lines().collect();
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        // Two rows of modules per line: as many rows as columns, give or take the odd one.
        assert!(
            (lines.len() * 2).abs_diff(width) <= 1,
            "{width} {}",
            lines.len()
        );
        // The quiet zone: the first line and the first column are light.
        assert!(lines[0].chars().all(|c| c == ' '));
        assert!(lines.iter().all(|l| l.starts_with("    ")));
        let ansi = super::terminal(&text, true).unwrap();
        assert_eq!(ansi.lines().count(), lines.len());
        assert!(ansi.lines().all(|l| l.starts_with("\x1b[30;107m")));
        assert!(super::terminal(&"x".repeat(5000), false).is_none());
    }

    #[test]
    fn an_svg_code_is_an_element_with_nothing_outside_it() {
        let s = super::svg("meshgroupabc", 160);
        assert!(s.starts_with("<svg") && s.ends_with("</svg>"), "{s}");
        assert!(!s.contains("<script") && !s.contains("href"), "{s}");
    }
}
