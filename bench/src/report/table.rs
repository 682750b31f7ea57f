//! What every table of the report is made of: a cell, a title, a header row, a row.
use std::fmt::{Display, Write};

use crate::results::Spread;

/// A spread as `median (min-max)` to `digits` decimals, ` ⚑` after it where `flagged`; `-`
/// where there is none.
pub(super) fn cell(s: Option<Spread>, flagged: bool, digits: usize) -> String {
    match s {
        None => "-".into(),
        Some(s) => {
            let flag = if flagged { " ⚑" } else { "" };
            format!(
                "{:.d$} ({:.d$}-{:.d$}){flag}",
                s.median,
                s.min,
                s.max,
                d = digits
            )
        }
    }
}

/// A table's title: `#### title` between blank lines.
pub(super) fn title(t: &mut String, title: &str) {
    writeln!(t, "\n#### {title}\n").unwrap();
}

/// A table's header: `corner` above the row names, one column per name, and the rule below.
pub(super) fn header(t: &mut String, corner: &str, columns: impl IntoIterator<Item: Display>) {
    write!(t, "| {corner} |").unwrap();
    let mut n = 0;
    for column in columns {
        write!(t, " {column} |").unwrap();
        n += 1;
    }
    writeln!(t, "\n|---|{}", "---|".repeat(n)).unwrap();
}

/// A row: its name, then its cells.
pub(super) fn row(t: &mut String, name: impl Display, cells: impl IntoIterator<Item: Display>) {
    write!(t, "| {name} |").unwrap();
    for c in cells {
        write!(t, " {c} |").unwrap();
    }
    writeln!(t).unwrap();
}

/// A whole table: its title, its header, and a row per (name, cells) of `rows`.
pub(super) fn titled<N: Display, C: IntoIterator<Item: Display>>(
    t: &mut String,
    title_: &str,
    corner: &str,
    columns: impl IntoIterator<Item: Display>,
    rows: impl IntoIterator<Item = (N, C)>,
) {
    title(t, title_);
    header(t, corner, columns);
    for (name, cells) in rows {
        row(t, name, cells);
    }
}
