//! Everything the plugin writes, as kubectl writes it: one document per command on standard
//! output (a table, exactly one JSON or YAML document, or `kind.group/name` lines), progress
//! and hints on standard error. A closed standard output (`| head -1`) ends the command with
//! [`Error::Closed`] (exit code 141, as a process killed by SIGPIPE), never a panic.

use std::io::{ErrorKind, Write};

use scistream_api::keys;
use serde::Serialize;

use crate::{
    cli::{Cli, Output},
    error::{Error, Result},
};

/// How a command prints its document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    /// `-o`.
    pub output: Output,
    /// Tables have their header line (not `--no-headers`).
    pub headers: bool,
}

impl Format {
    /// The format the command line asks for.
    pub fn of(cli: &Cli) -> Format {
        Format { output: cli.output, headers: !cli.no_headers }
    }
}

/// Writes `text` to standard output and flushes it.
pub fn stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(Error::Closed),
        Err(e) => Err(Error::Failed(format!("cannot write to standard output: {e}"))),
    }
}

/// Writes one line to standard error (progress, hints). Nothing to do if it is closed.
pub fn note(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `kind.group/name` of a StreamRequest, as `kubectl get -o name` prints it.
pub fn request_name(name: &str) -> String {
    format!("streamrequest.{}/{name}", keys::GROUP)
}

/// `kind.group/name` of a Gateway.
pub fn gateway_name(name: &str) -> String {
    format!("gateway.{}/{name}", keys::GROUP)
}

/// Prints `value` as the one document of a command: JSON or YAML of `value`, `names` one per
/// line for `-o name`, else the text `human` makes for people (tables honour
/// [`Format::headers`] through it).
pub fn document<T: Serialize>(
    format: Format,
    value: &T,
    names: &[String],
    human: impl FnOnce(Format) -> String,
) -> Result<()> {
    let text = match format.output {
        Output::Json => {
            let mut text = serde_json::to_string_pretty(value)
                .map_err(|e| Error::Failed(format!("cannot write the output as JSON: {e}")))?;
            text.push('\n');
            text
        }
        Output::Yaml => {
            serde_yaml::to_string(value).map_err(|e| Error::Failed(format!("cannot write the output as YAML: {e}")))?
        }
        Output::Name => names.iter().map(|n| format!("{n}\n")).collect(),
        Output::Table | Output::Wide => human(format),
    };
    stdout(&text)
}

/// What kubectl says on standard error when a list is empty (and prints nothing on stdout).
pub fn no_resources(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("No resources found in {ns} namespace."),
        None => "No resources found".to_owned(),
    }
}

/// A table as kubectl prints one: columns left-aligned, three spaces apart, no leading or
/// trailing spaces; the header line unless `headers` is false.
pub fn table(header: &[&str], rows: &[Vec<String>], headers: bool) -> String {
    let mut lines: Vec<Vec<&str>> = Vec::new();
    if headers {
        lines.push(header.to_vec());
    }
    lines.extend(rows.iter().map(|r| r.iter().map(String::as_str).collect()));
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let width = |c: usize| lines.iter().filter_map(|l| l.get(c)).map(|s| s.chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns).map(width).collect();
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            text.push_str(cell);
            if c + 1 < line.len() {
                let pad = widths[c] - cell.chars().count() + 3;
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned_like_kubectl() {
        let rows = vec![
            vec!["run-42".to_owned(), "aps:Ready".to_owned(), "".to_owned()],
            vec!["s".to_owned(), "-".to_owned(), "x".to_owned()],
        ];
        assert_eq!(
            table(&["NAME", "PRODUCER", "NOTE"], &rows, true),
            "NAME     PRODUCER    NOTE\nrun-42   aps:Ready\ns        -           x\n"
        );
        assert_eq!(table(&["NAME", "PRODUCER", "NOTE"], &rows, false), "run-42   aps:Ready\ns        -           x\n");
        assert_eq!(table(&["NAME"], &[], true), "NAME\n");
        assert_eq!(table(&["NAME"], &[], false), "");
    }

    #[test]
    fn names_are_kind_dot_group() {
        assert_eq!(request_name("run-42"), "streamrequest.scistream.io/run-42");
        assert_eq!(gateway_name("dtn"), "gateway.scistream.io/dtn");
        assert_eq!(no_resources(Some("science")), "No resources found in science namespace.");
    }
}
