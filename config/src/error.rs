//! [`ConfigError`] and the mapping of a TOML error back to a line, column
//! and dotted field path of the configuration file.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. Displayed as `<file>: <io error>`.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A syntax error, a value of the wrong type or form, or an unknown
    /// field. Displayed as `<file>:<line>:<column>: <field>: <message>`, the
    /// `<field>: ` part left out when no field could be found.
    #[error("{}", ParseDisplay(self))]
    Parse {
        /// The file, as given to [`crate::Config::from_toml_str`].
        path: PathBuf,
        /// 1-based line of the error (1 if the TOML error has no position).
        line: usize,
        /// 1-based column, in characters, of the error.
        column: usize,
        /// Dotted path of the field concerned, e.g. `cache.max_size`.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A well-formed file whose values do not make sense together.
    /// Displayed as `<file>: <field>: <message>`, or `<field>: <message>`
    /// when the path is empty (as from [`crate::Config::validate`] called on
    /// a configuration that was not read from a file).
    #[error("{}", InvalidDisplay(self))]
    Invalid {
        /// The file the configuration came from; empty if none.
        path: PathBuf,
        /// Dotted path of the offending field, e.g. `cache.max_object_size`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// Displays a [`ConfigError::Parse`].
struct ParseDisplay<'a>(&'a ConfigError);

impl fmt::Display for ParseDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ConfigError::Parse {
            path,
            line,
            column,
            field,
            message,
        } = self.0
        {
            write!(f, "{}:{line}:{column}: ", path.display())?;
            if let Some(field) = field {
                write!(f, "{field}: ")?;
            }
            f.write_str(message)?;
        }
        Ok(())
    }
}

/// Displays a [`ConfigError::Invalid`].
struct InvalidDisplay<'a>(&'a ConfigError);

impl fmt::Display for InvalidDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let ConfigError::Invalid {
            path,
            field,
            message,
        } = self.0
        {
            if !path.as_os_str().is_empty() {
                write!(f, "{}: ", path.display())?;
            }
            write!(f, "{field}: {message}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// Builds a [`ConfigError::Parse`] from a TOML error on `text`.
    pub(crate) fn from_toml(error: &toml::de::Error, text: &str, path: &Path) -> Self {
        let offset = error
            .span()
            .map_or(0, |span| floor_char_boundary(text, span.start));
        let line_start = text[..offset].rfind('\n').map_or(0, |n| n + 1);
        let line = text[..offset].matches('\n').count() + 1;
        let column = text[line_start..offset].chars().count() + 1;
        let field = error.span().and_then(|_| field_at(text, offset));
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            column,
            field,
            message: error.message().trim().to_owned(),
        }
    }

    /// Fills in the file of an [`ConfigError::Invalid`] error.
    pub(crate) fn in_file(self, file: &Path) -> Self {
        match self {
            ConfigError::Invalid { field, message, .. } => ConfigError::Invalid {
                path: file.to_owned(),
                field,
                message,
            },
            other => other,
        }
    }
}

/// The largest char boundary of `text` at or before `offset`.
fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The dotted path of the key or value at byte `offset` of `text`: the last
/// `[table]` header before it, then the keys assigned on its line up to it
/// (several for a dotted key or an inline table).
fn field_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset].rfind('\n').map_or(0, |n| n + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |n| offset + n);
    let line = &text[line_start..line_end];
    let mut path: Vec<String> = Vec::new();
    if header_of(line).is_some() {
        // The error is on a table header: name that table.
        path = table_path(&text[..line_start], line);
    } else {
        let mut before = &text[..line_start];
        // The last table header above the line, and what comes before that header.
        while let Some((rest, last)) = split_last_line(before) {
            if header_of(last).is_some() {
                path = table_path(rest, last);
                break;
            }
            before = rest;
        }
        path.extend(keys_before(line, offset - line_start));
    }
    (!path.is_empty()).then(|| path.join("."))
}

/// `text` without its last line, and that line (`text` ends with a line break).
fn split_last_line(text: &str) -> Option<(&str, &str)> {
    let body = text.strip_suffix('\n')?;
    let start = body.rfind('\n').map_or(0, |n| n + 1);
    Some((&text[..start], body[start..].trim_end_matches('\r')))
}

/// The dotted path of the table that the header `line` names; an entry of an array of
/// tables gets its index, counted from the headers in `before` (`cache.rule[1]`, as
/// validation errors name it).
fn table_path(before: &str, line: &str) -> Vec<String> {
    let Some(header) = header_of(line) else {
        return Vec::new();
    };
    let mut path = split_key(header);
    let is_array = |l: &str| l.trim_start().starts_with("[[");
    if is_array(line) {
        let index = before
            .lines()
            .filter(|l| is_array(l) && header_of(l).map(split_key).as_ref() == Some(&path))
            .count();
        if let Some(last) = path.last_mut() {
            last.push_str(&format!("[{index}]"));
        }
    }
    path
}

/// The name inside a `[table]` or `[[array]]` header line, if `line` is one.
fn header_of(line: &str) -> Option<&str> {
    let line = line.trim();
    let inner = line.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some(inner[..end].trim_start_matches('['))
}

/// Splits a possibly dotted, possibly quoted key into its parts.
fn split_key(key: &str) -> Vec<String> {
    key.split('.')
        .map(|part| part.trim().trim_matches(['"', '\'']).to_owned())
        .filter(|part| !part.is_empty())
        .collect()
}

/// The keys of the `key = value` assignments on `line` that start at or
/// before `column` (a byte index), following inline tables `{ ... }`.
fn keys_before(line: &str, column: usize) -> Vec<String> {
    // Each entry: the keys of one nesting level (outermost first).
    let mut levels: Vec<Vec<String>> = vec![Vec::new()];
    let mut key_start = 0;
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => break,
            (None, '=') if key_start <= column => {
                if let Some(level) = levels.last_mut() {
                    *level = split_key(&line[key_start..i]);
                }
            }
            (None, '{') => {
                levels.push(Vec::new());
                key_start = i + 1;
            }
            (None, '}') => {
                levels.pop();
            }
            (None, ',') => key_start = i + 1,
            _ => {}
        }
        if i >= column && c == '=' {
            break;
        }
    }
    levels.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths() {
        let text = "a = 1\n[cache]\nmax_size = \"x\"\n[origin] # c\nx.y = 2\nt = { u = 1, v = { w = 3 } }\n";
        let at = |needle: &str| field_at(text, text.find(needle).expect("needle in text"));
        assert_eq!(at("a =").as_deref(), Some("a"));
        assert_eq!(at("\"x\"").as_deref(), Some("cache.max_size"));
        assert_eq!(at("max_size").as_deref(), Some("cache.max_size"));
        assert_eq!(at("[origin]").as_deref(), Some("origin"));
        assert_eq!(at("2\n").as_deref(), Some("origin.x.y"));
        assert_eq!(at("u =").as_deref(), Some("origin.t.u"));
        assert_eq!(at("1, v").as_deref(), Some("origin.t.u"));
        assert_eq!(at("w =").as_deref(), Some("origin.t.v.w"));
        assert_eq!(field_at("", 0), None);
    }

    #[test]
    fn entries_of_an_array_of_tables_are_numbered() {
        let text = "[[cache.rule]]\nurl = \"a\"\n\n[[ cache.rule ]]\nurl = \"(\"\n[[sync.feed]]\nx = 1\n[[cache.rule]]\n";
        let at = |needle: &str| field_at(text, text.find(needle).expect("needle in text"));
        assert_eq!(at("\"a\"").as_deref(), Some("cache.rule[0].url"));
        assert_eq!(at("\"(\"").as_deref(), Some("cache.rule[1].url"));
        assert_eq!(at("[[ cache").as_deref(), Some("cache.rule[1]"));
        assert_eq!(at("x =").as_deref(), Some("sync.feed[0].x"));
        let last = text.rfind("[[cache.rule]]").expect("last header");
        assert_eq!(field_at(text, last).as_deref(), Some("cache.rule[2]"));
    }
}
