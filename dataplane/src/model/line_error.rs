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
