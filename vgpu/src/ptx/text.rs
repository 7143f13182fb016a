//! Character-level helpers of the parser: comment removal that keeps every byte offset (so
//! line numbers stay right), and finding the ends of statements, bodies and labels.

/// The module text with comments blanked out, and where each line starts.
pub struct Source {
    clean: String,
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(text: &str) -> Source {
        let clean = strip_comments(text);
        let mut line_starts = vec![0];
        line_starts.extend(
            clean
                .bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Source { clean, line_starts }
    }

    /// The text with comments replaced by spaces (newlines kept).
    pub fn clean(&self) -> &str {
        &self.clean
    }

    /// The 1-based line of byte `offset`.
    pub fn line_of(&self, offset: usize) -> u32 {
        self.line_starts.partition_point(|&s| s <= offset) as u32
    }
}

/// `//` to the end of the line and `/* ... */` become spaces; string literals (in `.pragma`)
/// are left alone.
fn strip_comments(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    while i < b.len() {
        let c = b[i];
        if in_string {
            out.push(c);
            if c == b'"' {
                in_string = false;
            }
            i += 1;
        } else if c == b'"' {
            in_string = true;
            out.push(c);
            i += 1;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            out.extend(
                b[i..end]
                    .iter()
                    .map(|&c| if c == b'\n' { b'\n' } else { b' ' }),
            );
            i = end;
        } else {
            out.push(c);
            i += 1;
        }
    }
    // Only ASCII bytes were replaced by ASCII bytes, and whole comments at that: still UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// The first non-space byte at or after `from`.
pub fn skip_space(text: &str, from: usize) -> Option<usize> {
    text.as_bytes()[from.min(text.len())..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|p| p + from)
}

/// End of a module-level header: the first `;` or `{` outside parentheses (a `{` after `=`
/// opens an initializer, not a body). Returns the offset and which byte it was.
pub fn header_end(text: &str, from: usize) -> Option<(usize, u8)> {
    let mut depth = 0i32;
    let mut initializer = false;
    for (i, &c) in text.as_bytes()[from..].iter().enumerate() {
        match c {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b'=' if depth == 0 => initializer = true,
            b';' if depth == 0 => return Some((from + i, b';')),
            b'{' if depth == 0 && !initializer => return Some((from + i, b'{')),
            _ => {}
        }
    }
    None
}

/// The `}` that closes the `{` at `open`.
pub fn matching_brace(text: &str, open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, &c) in text.as_bytes()[open..].iter().enumerate() {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The `;` that ends the statement starting at `from` (braces and brackets of operands are
/// skipped over), before `limit`.
pub fn statement_end(text: &str, from: usize, limit: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, &c) in text.as_bytes()[from..limit].iter().enumerate() {
        match c {
            b'{' | b'[' | b'(' => depth += 1,
            b'}' | b']' | b')' => depth -= 1,
            b';' if depth <= 0 => return Some(from + i),
            _ => {}
        }
    }
    None
}

/// The length of a label name if `s` starts with `name:` (and not `name::`, which is part of
/// an opcode modifier such as `L1::no_allocate`).
pub fn label_at(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let first = *b.first()?;
    if !(first.is_ascii_alphabetic() || first == b'_' || first == b'$') {
        return None;
    }
    let len = b
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$'))?;
    (b[len] == b':' && b.get(len + 1) != Some(&b':')).then_some(len)
}

/// Splits operands at commas outside braces and brackets.
pub fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' | '[' | '(' => depth += 1,
            '}' | ']' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = s[start..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out
}
