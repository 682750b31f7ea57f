//! Problems in a text file, by line: every parser here reports all of a file's problems at
//! once, each with its line.

/// One problem in a file, at a 1-based line; line 0 is a problem of the whole file (or of the
/// system it was resolved against).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// One `PATH:LINE: message` per problem (`PATH: message` for line 0), a line each.
pub fn render_line_errors(path: &str, errors: &[LineError]) -> String {
    errors
        .iter()
        .map(|e| match e.line {
            0 => format!("{path}: {}", e.message),
            n => format!("{path}:{n}: {}", e.message),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The statements of a line-based file: each non-empty line's 1-based number and words, its
/// `#` comment left out.
pub fn statements(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines().enumerate().filter_map(|(index, raw)| {
        let words: Vec<&str> = raw
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        (!words.is_empty()).then_some((index + 1, words))
    })
}

/// `value` if no line had a problem; otherwise every problem, in line order.
pub fn all_or_errors<T>(value: T, mut errors: Vec<LineError>) -> Result<T, Vec<LineError>> {
    if errors.is_empty() {
        Ok(value)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

/// A file of one of these formats that could not be read, or whose lines did not parse.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", render_line_errors(.path, .errors))]
    Invalid {
        path: String,
        errors: Vec<LineError>,
    },
}

/// Reads the file at `path` and parses it with `parse`, which reports every bad line.
pub fn load_file<T>(
    path: &std::path::Path,
    parse: impl FnOnce(&str) -> Result<T, Vec<LineError>>,
) -> Result<T, FileError> {
    load_file_as_read(path, parse).map(|(parsed, _)| parsed)
}

/// As [`load_file`], with the bytes that were parsed: what a process that follows the file
/// holds, so that a change made after this read is seen as one.
pub fn load_file_as_read<T>(
    path: &std::path::Path,
    parse: impl FnOnce(&str) -> Result<T, Vec<LineError>>,
) -> Result<(T, Vec<u8>), FileError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| FileError::Read {
        path: shown.clone(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| FileError::Read {
        path: shown.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })?;
    match parse(&text) {
        Ok(parsed) => Ok((parsed, text.into_bytes())),
        Err(errors) => Err(FileError::Invalid {
            path: shown,
            errors,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_line_or_the_whole_file() {
        let errors = [
            LineError {
                line: 3,
                message: "bad".into(),
            },
            LineError {
                line: 0,
                message: "no such interface".into(),
            },
        ];
        assert_eq!(
            render_line_errors("t.routes", &errors),
            "t.routes:3: bad\nt.routes: no such interface"
        );
    }
}
