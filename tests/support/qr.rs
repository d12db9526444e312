//! Reading QR codes back, as a phone would: the terminal's block characters and the
//! pages' inline SVG drawn into grey levels and decoded by `rqrr`.

/// Decodes a grid of modules (`true` = dark), drawn `scale` pixels per module.
fn decode_modules(rows: &[Vec<bool>], scale: usize) -> String {
    let h = rows.len();
    let w = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w * scale, h * scale, |x, y| {
        match rows[y / scale].get(x / scale) {
            Some(true) => 0,
            _ => 255,
        }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the picture");
    grids[0].decode().expect("the QR code decodes").1
}

/// Decodes a QR code printed as text: each character is two modules, one above the other
/// (`▀` the upper dark, `▄` the lower, `█` both, space neither). ANSI colour sequences
/// and lines of anything else around the code are skipped.
pub fn decode_terminal(text: &str) -> String {
    let mut rows: Vec<Vec<bool>> = Vec::new();
    for line in text.lines() {
        let line = strip_ansi(line);
        if line.is_empty() || !line.chars().all(|c| " ▀▄█".contains(c)) {
            continue;
        }
        let (mut top, mut bottom) = (Vec::new(), Vec::new());
        for c in line.chars() {
            top.push(c == '▀' || c == '█');
            bottom.push(c == '▄' || c == '█');
        }
        rows.push(top);
        rows.push(bottom);
    }
    assert!(rows.len() > 20, "no QR code in {text}");
    decode_modules(&rows, 4)
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Decodes the first QR code drawn as SVG in `html` (as the `qrcode` crate draws one: a
/// `viewBox`, then one path of `M{x} {y}h{w}v{h}H{x}V{y}` rectangles, the dark modules).
pub fn decode_svg(html: &str) -> String {
    let svg = &html[html.find("<svg").expect("an <svg> in the page")..];
    let svg = &svg[..svg.find("</svg>").expect("a whole <svg>")];
    let view = attr(svg, "viewBox");
    let dims: Vec<usize> = view
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let (w, h) = (dims[2], dims[3]);
    let d = attr(&svg[svg.find("<path").expect("a path")..], "d");
    let mut px = vec![vec![false; w]; h];
    for rect in d.split('M').filter(|r| !r.is_empty()) {
        // "{x} {y}h{w}v{h}H{x}V{y}"
        let nums: Vec<usize> = rect
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let (x, y, rw, rh) = (nums[0], nums[1], nums[2], nums[3]);
        for row in px.iter_mut().skip(y).take(rh) {
            for p in row.iter_mut().skip(x).take(rw) {
                *p = true;
            }
        }
    }
    decode_modules(&px, 1)
}

fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let start = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    &tag[start..start + tag[start..].find('"').unwrap()]
}
