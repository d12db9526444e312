//! Structure-aware mutation: byte-level moves (bit flips, insertion, deletion, interesting
//! bytes and integers), text moves that keep the shape of headers and TOML (replace a
//! token or a line, duplicate or swap lines, dictionary tokens, interesting numbers) and
//! binary moves for postcard (varints of extreme values), plus splicing with other inputs
//! of the corpus.

use crate::rng::Rng;

/// Numbers that break parsers: limits of every integer width, one past them, negatives,
/// fractions, exponents, leading zeros, empty.
pub const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "-0",
    "00",
    "0x10",
    "1.5",
    "0.0",
    "-0.5",
    "1e3",
    "1e308",
    "NaN",
    "inf",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211455",
    "99999999999999999999999999999999999999999999",
    "",
];

/// Bytes that matter to the formats fuzzed here (separators, quotes, controls, non-UTF-8).
const BYTES: &[u8] =
    b"\x00\x01\t\n\r \"',;:=-/\\[]{}#*.0179azAZ\x7f\x80\xbf\xc0\xc3\xe2\xf0\xfe\xff";

/// postcard varints of extreme values (and over-long, non-canonical ones).
const VARINTS: &[&[u8]] = &[
    &[0x00],
    &[0x01],
    &[0x7f],
    &[0x80, 0x01],
    &[0x80, 0x00],
    &[0xff, 0xff, 0x03],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xff, 0xff, 0xff, 0xff, 0x1f],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    &[
        0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
    ],
    &[0x80, 0x80, 0x80, 0x80, 0x10],
];

/// What a target's inputs look like, for the mutator.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Tokens of the format (directive names, header names, dates, TOML keys, ...).
    pub dictionary: &'static [&'static str],
    /// Text (line and token moves) or binary (varint moves); both get byte moves.
    pub text: bool,
    /// Inputs are cut to this length.
    pub max_len: usize,
}

/// Applies 1 to 8 stacked mutations to `data`, splicing from `corpus` sometimes.
pub fn mutate(data: &mut Vec<u8>, rng: &mut Rng, corpus: &[Vec<u8>], shape: &Shape) {
    let rounds = 1 + rng.below(8).min(rng.below(8));
    for _ in 0..rounds {
        let moves = if shape.text { 17 } else { 12 };
        match rng.below(moves) {
            0 => flip_bit(data, rng),
            1 => set_byte(data, rng),
            2 => insert_bytes(data, rng),
            3 => delete_range(data, rng),
            4 => duplicate_range(data, rng),
            5 => splice(data, rng, corpus),
            6 => insert_token(data, rng, shape.dictionary),
            7 => insert_token(data, rng, NUMBERS),
            8 => overwrite_int(data, rng),
            9 => insert_corpus_piece(data, rng, corpus),
            10 => swap_ranges(data, rng),
            11 => {
                if shape.text {
                    replace_token(data, rng, NUMBERS)
                } else {
                    insert_varint(data, rng)
                }
            }
            12 => replace_token(data, rng, shape.dictionary),
            13 => duplicate_line(data, rng),
            14 => delete_line(data, rng),
            15 => swap_lines(data, rng),
            _ => insert_line_from(data, rng, corpus),
        }
    }
    data.truncate(shape.max_len);
}

fn pos(data: &[u8], rng: &mut Rng) -> usize {
    rng.below(data.len() + 1)
}

fn range(data: &[u8], rng: &mut Rng) -> (usize, usize) {
    let a = pos(data, rng);
    let cap = if rng.one_in(8) { 4096 } else { 16 };
    let max = (data.len() - a).min(cap);
    (a, a + rng.below(max + 1))
}

fn flip_bit(data: &mut [u8], rng: &mut Rng) {
    if !data.is_empty() {
        let i = rng.below(data.len());
        data[i] ^= 1 << rng.below(8);
    }
}

fn set_byte(data: &mut [u8], rng: &mut Rng) {
    if !data.is_empty() {
        let i = rng.below(data.len());
        data[i] = if rng.one_in(2) {
            *rng.pick(BYTES)
        } else {
            rng.byte()
        };
    }
}

fn insert_bytes(data: &mut Vec<u8>, rng: &mut Rng) {
    let at = pos(data, rng);
    let max = if rng.one_in(4) { 64 } else { 4 };
    let n = 1 + rng.below(max);
    let bytes: Vec<u8> = if rng.one_in(2) {
        (0..n).map(|_| *rng.pick(BYTES)).collect()
    } else if rng.one_in(2) {
        vec![*rng.pick(BYTES); n]
    } else {
        rng.bytes(n)
    };
    data.splice(at..at, bytes);
}

fn delete_range(data: &mut Vec<u8>, rng: &mut Rng) {
    let (a, b) = range(data, rng);
    data.drain(a..b);
}

fn duplicate_range(data: &mut Vec<u8>, rng: &mut Rng) {
    let (a, b) = range(data, rng);
    let piece = data[a..b].to_vec();
    let at = pos(data, rng);
    data.splice(at..at, piece);
}

fn swap_ranges(data: &mut [u8], rng: &mut Rng) {
    if data.len() < 2 {
        return;
    }
    let n = 1 + rng.below((data.len() / 2).min(16));
    let a = rng.below(data.len() - n + 1);
    let b = rng.below(data.len() - n + 1);
    for k in 0..n {
        if a + k != b + k && a + k < data.len() && b + k < data.len() {
            data.swap(a + k, b + k);
        }
    }
}

/// Replaces the tail (from a random point) with the tail of another input.
fn splice(data: &mut Vec<u8>, rng: &mut Rng, corpus: &[Vec<u8>]) {
    if corpus.is_empty() {
        return;
    }
    let other = rng.pick(corpus);
    let at = pos(data, rng);
    let from = rng.below(other.len() + 1);
    data.truncate(at);
    data.extend_from_slice(&other[from..]);
}

fn insert_corpus_piece(data: &mut Vec<u8>, rng: &mut Rng, corpus: &[Vec<u8>]) {
    if corpus.is_empty() {
        return;
    }
    let other = rng.pick(corpus);
    let (a, b) = range(other, rng);
    let at = pos(data, rng);
    data.splice(at..at, other[a..b].iter().copied());
}

fn insert_token(data: &mut Vec<u8>, rng: &mut Rng, tokens: &[&str]) {
    if tokens.is_empty() {
        return;
    }
    let t = rng.pick(tokens).as_bytes();
    let at = pos(data, rng);
    data.splice(at..at, t.iter().copied());
}

/// Little- or big-endian limits of 8/16/32/64-bit integers written over the data.
fn overwrite_int(data: &mut Vec<u8>, rng: &mut Rng) {
    let width = [1usize, 2, 4, 8][rng.below(4)];
    let value: u64 = match rng.below(6) {
        0 => 0,
        1 => u64::MAX,
        2 => (1u64 << (width * 8 - 1)).wrapping_sub(rng.below(2) as u64),
        3 => 1 << (width * 8 - 1),
        4 => rng.below(300) as u64,
        _ => rng.next_u64(),
    };
    let bytes = value.to_le_bytes();
    let mut bytes = bytes[..width].to_vec();
    if rng.one_in(2) {
        bytes.reverse();
    }
    let at = pos(data, rng);
    let end = (at + width).min(data.len());
    data.splice(at..end, bytes);
}

fn insert_varint(data: &mut Vec<u8>, rng: &mut Rng) {
    let v = rng.pick(VARINTS);
    let at = pos(data, rng);
    if rng.one_in(2) {
        // Overwrite a varint-sized piece: a length or a field becomes extreme.
        let end = (at + 1 + rng.below(3)).min(data.len());
        data.splice(at..end, v.iter().copied());
    } else {
        data.splice(at..at, v.iter().copied());
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
}

/// Replaces a maximal run of token bytes (a word, a number) with a dictionary token.
fn replace_token(data: &mut Vec<u8>, rng: &mut Rng, tokens: &[&str]) {
    if tokens.is_empty() || data.is_empty() {
        return;
    }
    let mut i = rng.below(data.len());
    let mut tries = 0;
    while !is_token_byte(data[i]) {
        i = (i + 1) % data.len();
        tries += 1;
        if tries > data.len() {
            return;
        }
    }
    let mut a = i;
    while a > 0 && is_token_byte(data[a - 1]) {
        a -= 1;
    }
    let mut b = i;
    while b < data.len() && is_token_byte(data[b]) {
        b += 1;
    }
    // Sometimes only the part after '=' or the digits, so `max-age=60` keeps its name.
    if rng.one_in(2) {
        if let Some(eq) = data[a..b].iter().position(|&c| !c.is_ascii_alphabetic()) {
            a += eq;
        }
    }
    let t = rng.pick(tokens).as_bytes();
    data.splice(a..b, t.iter().copied());
}

fn lines(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' {
            out.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < data.len() {
        out.push((start, data.len()));
    }
    out
}

fn duplicate_line(data: &mut Vec<u8>, rng: &mut Rng) {
    let ls = lines(data);
    if ls.is_empty() {
        return;
    }
    let (a, b) = *rng.pick(&ls);
    let mut line = data[a..b].to_vec();
    if line.last() != Some(&b'\n') {
        line.push(b'\n');
    }
    let (at, _) = *rng.pick(&ls);
    data.splice(at..at, line);
}

fn delete_line(data: &mut Vec<u8>, rng: &mut Rng) {
    let ls = lines(data);
    if ls.is_empty() {
        return;
    }
    let (a, b) = *rng.pick(&ls);
    data.drain(a..b);
}

fn swap_lines(data: &mut Vec<u8>, rng: &mut Rng) {
    let ls = lines(data);
    if ls.len() < 2 {
        return;
    }
    let i = rng.below(ls.len());
    let j = rng.below(ls.len());
    let (i, j) = (i.min(j), i.max(j));
    if i == j {
        return;
    }
    let (a, b) = ls[i];
    let (c, d) = ls[j];
    let mut out = Vec::with_capacity(data.len() + 1);
    out.extend_from_slice(&data[..a]);
    out.extend_from_slice(&data[c..d]);
    if data[d - 1] != b'\n' {
        out.push(b'\n');
    }
    out.extend_from_slice(&data[b..c]);
    out.extend_from_slice(&data[a..b]);
    out.extend_from_slice(&data[d..]);
    *data = out;
}

fn insert_line_from(data: &mut Vec<u8>, rng: &mut Rng, corpus: &[Vec<u8>]) {
    if corpus.is_empty() {
        return;
    }
    let other = rng.pick(corpus);
    let ls = lines(other);
    if ls.is_empty() {
        return;
    }
    let (a, b) = *rng.pick(&ls);
    let mut line = other[a..b].to_vec();
    if line.last() != Some(&b'\n') {
        line.push(b'\n');
    }
    let mine = lines(data);
    let at = if mine.is_empty() {
        0
    } else {
        rng.pick(&mine).0
    };
    data.splice(at..at, line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_bounded_and_vary() {
        let shape = Shape {
            dictionary: &["max-age", "no-store"],
            text: true,
            max_len: 64,
        };
        let corpus = vec![b"cache-control: max-age=60\nvary: accept\n".to_vec()];
        let mut rng = Rng::new(1);
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..2000 {
            let mut d = corpus[0].clone();
            mutate(&mut d, &mut rng, &corpus, &shape);
            assert!(d.len() <= 64);
            distinct.insert(d);
        }
        assert!(distinct.len() > 1000, "{}", distinct.len());
        let bin = Shape {
            text: false,
            ..shape
        };
        let mut d = vec![1, 2, 3];
        for _ in 0..2000 {
            mutate(&mut d, &mut rng, &corpus, &bin);
            if d.is_empty() {
                d.push(0);
            }
        }
    }
}
