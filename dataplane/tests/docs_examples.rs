//! The example files that docs/formats.md shows, parsed by the loader's own parsers: every
//! fenced code block whose info string names a format (```routes, ```policy, ```services) is
//! a complete file of that format and must parse. An example that stops parsing fails here,
//! with the block and every problem the parser found. No root needed.
use std::path::PathBuf;

use dataplane::model::{LineError, policy, route_table, services};

/// One fenced block: its info string, the line of the docs file its text starts at, its text.
struct Block {
    info: String,
    first_line: usize,
    text: String,
}

const FORMATS_MD: &str = "docs/formats.md";

fn formats_md() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(FORMATS_MD);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every fenced code block of a Markdown text (``` or ~~~ fences, as CommonMark opens and
/// closes them: a closing fence is the same character, at least as long, with nothing after).
fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(char, usize, Block)> = None;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let fence = |c: char| trimmed.chars().take_while(|&x| x == c).count();
        match open.take() {
            None => {
                for c in ['`', '~'] {
                    let n = fence(c);
                    if n >= 3 {
                        let info = trimmed[n..].trim();
                        let info = info.split_whitespace().next().unwrap_or("").to_string();
                        let block = Block {
                            info,
                            first_line: index + 2,
                            text: String::new(),
                        };
                        open = Some((c, n, block));
                        break;
                    }
                }
            }
            Some((c, n, mut block)) => {
                if fence(c) >= n && trimmed[fence(c)..].trim().is_empty() {
                    blocks.push(block);
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                    open = Some((c, n, block));
                }
            }
        }
    }
    assert!(
        open.is_none(),
        "{FORMATS_MD}: a fenced code block is never closed"
    );
    blocks
}

/// Parses every block of format `info` with `parse`: the number of blocks, or a report naming
/// each block that does not parse, with its text and its problems (or that there is none).
fn check_all(
    blocks: &[Block],
    info: &str,
    parse: impl Fn(&str) -> Result<(), Vec<LineError>>,
) -> Result<usize, String> {
    let of_kind: Vec<&Block> = blocks.iter().filter(|b| b.info == info).collect();
    if of_kind.is_empty() {
        return Err(format!(
            "{FORMATS_MD} has no ```{info} block: each format's example must be marked so that \
             it is checked"
        ));
    }
    let mut failures = Vec::new();
    for block in &of_kind {
        if let Err(errors) = parse(&block.text) {
            let problems = errors
                .iter()
                .map(|e| {
                    let at = if e.line == 0 {
                        "(whole file)".to_string()
                    } else {
                        format!(
                            "block line {} ({FORMATS_MD}:{})",
                            e.line,
                            block.first_line + e.line - 1
                        )
                    };
                    format!("  {at}: {}", e.message)
                })
                .collect::<Vec<_>>()
                .join("\n");
            failures.push(format!(
                "the ```{info} block at {FORMATS_MD}:{} does not parse:\n{problems}\n\
                 --- block ---\n{}--- end ---",
                block.first_line, block.text
            ));
        }
    }
    if failures.is_empty() {
        Ok(of_kind.len())
    } else {
        Err(failures.join("\n\n"))
    }
}

/// Every block of format `info` in docs/formats.md parses; prints how many there are.
fn examples_parse(info: &str, parse: impl Fn(&str) -> Result<(), Vec<LineError>>) {
    let blocks = fenced_blocks(&formats_md());
    match check_all(&blocks, info, parse) {
        Ok(n) => println!("{n} ```{info} example(s) in {FORMATS_MD} parse"),
        Err(report) => panic!("{report}"),
    }
}

#[test]
fn the_route_table_examples_parse() {
    examples_parse("routes", |text| route_table::parse(text).map(|_| ()));
}

#[test]
fn the_policy_examples_parse() {
    examples_parse("policy", |text| policy::parse(text).map(|_| ()));
}

#[test]
fn the_services_examples_parse() {
    examples_parse("services", |text| services::parse(text).map(|_| ()));
}

/// The block reader itself: info strings, fence lengths and line numbers as the docs use them.
#[test]
fn fenced_blocks_are_read_with_their_info_string_and_line() {
    let md =
        "text\n```routes\ninterface eth0\n```\n\n````policy extra\n```\ninner\n````\n~~~\nx\n~~~\n";
    let blocks = fenced_blocks(md);
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[0].info, "routes");
    assert_eq!(blocks[0].first_line, 3);
    assert_eq!(blocks[0].text, "interface eth0\n");
    assert_eq!(blocks[1].info, "policy");
    assert_eq!(blocks[1].text, "```\ninner\n");
    assert_eq!(blocks[2].info, "");
    assert_eq!(blocks[2].text, "x\n");
}

/// A block that does not parse is reported with its text and the parser's problem, and a
/// format with no block at all is reported too.
#[test]
fn a_broken_or_missing_example_is_reported() {
    let md = "```services\nservice web 10.96.0.10:80 sctp 198.18.1.3:8080\n```\n";
    let blocks = fenced_blocks(md);
    let parse = |text: &str| services::parse(text).map(|_| ());
    let message = check_all(&blocks, "services", parse).expect_err("a bad example must fail");
    assert!(
        message.contains("service web 10.96.0.10:80 sctp"),
        "{message}"
    );
    assert!(message.contains("block line 1"), "{message}");
    let missing = check_all(&blocks, "policy", |_| Ok(())).expect_err("no policy block");
    assert!(missing.contains("no ```policy block"), "{missing}");
}
