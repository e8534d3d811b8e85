//! Shell completion through kubectl: kubectl (1.26+) completes `kubectl scistream ...` by
//! running `kubectl_complete-scistream WORDS... PARTIAL` from the PATH and reading cobra's
//! protocol: one candidate per line (`value<TAB>description`), then `:DIRECTIVE`. The release
//! archive ships that executable; `kubectl-scistream __complete WORDS...` answers the same, for
//! a two-line script of that name where only one binary is installed (krew).
//!
//! [`plan`] decides what to complete from the clap command tree (pure, table-tested):
//! subcommands, flags, flag values, or something only a cluster or the kubeconfig knows
//! (contexts, stream names, gateways), which [`run`] looks up with a short deadline.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use clap::{Arg, Command, CommandFactory};

use kube::{ResourceExt, api::ListParams, config::Kubeconfig};

use crate::{cli::Cli, facility::Facility};

/// cobra's `ShellCompDirectiveNoFileComp`: do not fall back to file names.
pub const NO_FILES: u8 = 4;
/// cobra's `ShellCompDirectiveDefault`: the shell may complete file names.
pub const FILES: u8 = 0;

/// Longest a cluster lookup may take while the user waits at the prompt.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(3);

/// What to complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// These candidates (value, description).
    Items(Vec<(String, String)>),
    /// Kubeconfig context names (of `--kubeconfig` if given).
    Contexts(Scope),
    /// StreamRequests of a context and namespace.
    Streams(Scope),
    /// Gateways of a context.
    Gateways(Scope),
    /// File names (the shell does it).
    Files,
}

/// Where a lookup goes, from the flags already typed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// `--kubeconfig`.
    pub kubeconfig: Option<String>,
    /// The context (`--context`, or `--prod-context`/`--cons-context` for their gateways).
    pub context: Option<String>,
    /// The namespace.
    pub namespace: Option<String>,
}

/// The command tree as clap completes it: built, so global flags are on every subcommand
/// and every flag knows how many values it takes.
pub fn command() -> Command {
    let mut root = Cli::command();
    root.build();
    root
}

fn find_flag<'a>(cmd: &'a Command, word: &str) -> Option<&'a Arg> {
    if let Some(long) = word.strip_prefix("--") {
        let long = long.split('=').next().unwrap_or(long);
        return cmd.get_arguments().find(|a| a.get_long() == Some(long));
    }
    let short = word.strip_prefix('-')?.chars().next()?;
    cmd.get_arguments().find(|a| a.get_short() == Some(short))
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values())
}

/// What to offer for `partial`, the word being typed after `words` (the words after
/// `kubectl scistream`); `root` is [`command`].
pub fn plan(root: &Command, words: &[String], partial: &str) -> Plan {
    let mut cmd = root;
    let mut pending: Option<&Arg> = None;
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut positionals = 0;
    for word in words {
        if let Some(arg) = pending.take() {
            values.insert(arg.get_id().to_string(), word.clone());
            continue;
        }
        if word.starts_with('-') && word.len() > 1 {
            if let Some(arg) = find_flag(cmd, word).filter(|a| takes_value(a)) {
                // The value follows as the next word, or is attached: `--flag=value`, `-ojson`.
                let attached = match word.strip_prefix("--") {
                    Some(long) => long.split_once('=').map(|(_, v)| v),
                    None => word.get(2..).filter(|v| !v.is_empty()),
                };
                match attached {
                    Some(v) => {
                        values.insert(arg.get_id().to_string(), v.to_owned());
                    }
                    None => pending = Some(arg),
                }
            }
            continue;
        }
        match cmd.find_subcommand(word) {
            Some(sub) => cmd = sub,
            None => positionals += 1,
        }
    }
    let scope = |context_flag: &str| Scope {
        kubeconfig: values.get("kubeconfig").cloned(),
        context: values.get(context_flag).cloned(),
        namespace: values.get("namespace").cloned(),
    };
    if let Some(arg) = pending {
        let id = arg.get_id().as_str();
        return match id {
            "context" | "prod_context" | "cons_context" => Plan::Contexts(scope("context")),
            "kubeconfig" | "server_cert" => Plan::Files,
            "prod_gateway" => Plan::Gateways(scope("prod_context")),
            "cons_gateway" => Plan::Gateways(scope("cons_context")),
            _ => Plan::Items(
                arg.get_possible_values()
                    .iter()
                    .filter(|v| !v.is_hide_set())
                    .map(|v| (v.get_name().to_owned(), v.get_help().map(ToString::to_string).unwrap_or_default()))
                    .collect(),
            ),
        };
    }
    if partial.starts_with('-') {
        let flags =
            cmd.get_arguments().chain(root.get_arguments().filter(|a| a.is_global_set() && !std::ptr::eq(cmd, root)));
        return Plan::Items(
            flags
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| {
                    Some((format!("--{}", a.get_long()?), a.get_help().map(ToString::to_string).unwrap_or_default()))
                })
                .collect(),
        );
    }
    if cmd.has_subcommands() {
        return Plan::Items(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(|s| (s.get_name().to_owned(), s.get_about().map(ToString::to_string).unwrap_or_default()))
                .collect(),
        );
    }
    let arg = cmd.get_positionals().nth(positionals);
    match arg.map(|a| a.get_id().as_str()) {
        Some("name") if ["get", "describe", "release", "update", "doctor"].contains(&cmd.get_name()) => {
            Plan::Streams(scope("context"))
        }
        Some(_) => Plan::Items(
            arg.into_iter()
                .flat_map(Arg::get_possible_values)
                .map(|v| (v.get_name().to_owned(), v.get_help().map(ToString::to_string).unwrap_or_default()))
                .collect(),
        ),
        None => Plan::Items(Vec::new()),
    }
}

/// cobra's protocol: the candidates starting with `partial`, one per line, then the directive.
pub fn render(items: &[(String, String)], partial: &str, directive: u8) -> String {
    let mut out = String::new();
    for (value, help) in items.iter().filter(|(v, _)| v.starts_with(partial)) {
        let help = help.lines().next().unwrap_or_default();
        if help.is_empty() {
            out.push_str(&format!("{value}\n"));
        } else {
            out.push_str(&format!("{value}\t{help}\n"));
        }
    }
    out.push_str(&format!(":{directive}\n"));
    out
}

fn kubeconfig(scope: &Scope) -> Option<Kubeconfig> {
    match &scope.kubeconfig {
        Some(path) => Kubeconfig::read_from(PathBuf::from(path)).ok(),
        None => Kubeconfig::read().ok(),
    }
}

async fn names(scope: &Scope, streams: bool) -> Vec<(String, String)> {
    let lookup = async {
        let f = Facility::connect(
            scope.kubeconfig.as_deref().map(std::path::Path::new),
            scope.context.as_deref(),
            scope.namespace.as_deref(),
        )
        .await
        .ok()?;
        let names: Vec<(String, String)> = if streams {
            let list = f.requests().list(&ListParams::default()).await.ok()?;
            list.items.iter().map(|sr| (sr.name_any(), format!("{:?} side", sr.spec.role))).collect()
        } else {
            let list = f.gateways().list(&ListParams::default()).await.ok()?;
            list.items.iter().map(|g| (g.name_any(), format!("{:?}", g.spec.implementation))).collect()
        };
        Some(names)
    };
    tokio::time::timeout(LOOKUP_DEADLINE, lookup).await.ok().flatten().unwrap_or_default()
}

/// Answers a completion request: `args` are the words after `kubectl scistream`, the last
/// one the word being typed (kubectl passes it, possibly empty).
pub async fn run(args: &[String]) -> String {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (partial, words) = match args.split_last() {
        Some((last, rest)) => (last.as_str(), rest),
        None => ("", args),
    };
    match plan(&command(), words, partial) {
        Plan::Items(items) => render(&items, partial, NO_FILES),
        Plan::Files => render(&[], partial, FILES),
        Plan::Contexts(scope) => {
            let contexts = kubeconfig(&scope)
                .map(|k| k.contexts.into_iter().map(|c| (c.name, String::new())).collect::<Vec<_>>())
                .unwrap_or_default();
            render(&contexts, partial, NO_FILES)
        }
        Plan::Streams(scope) => render(&names(&scope, true).await, partial, NO_FILES),
        Plan::Gateways(scope) => render(&names(&scope, false).await, partial, NO_FILES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(line: &str) -> Plan {
        let mut words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        let partial = words.pop().unwrap_or_default();
        plan(&command(), &words, &partial)
    }

    fn values(p: &Plan) -> Vec<&str> {
        match p {
            Plan::Items(items) => items.iter().map(|(v, _)| v.as_str()).collect(),
            other => panic!("not items: {other:?}"),
        }
    }

    #[test]
    fn plans_follow_the_command_line() {
        assert!(values(&plan_of("")).contains(&"create"));
        assert!(!values(&plan_of("")).contains(&"__complete"));
        assert!(values(&plan_of("list -")).contains(&"--no-headers"));
        assert!(values(&plan_of("list -")).contains(&"--all-namespaces"));
        assert!(values(&plan_of("create x --")).contains(&"--prod-gateway"));
        assert_eq!(values(&plan_of("get run-42 -o ")), ["table", "wide", "json", "yaml", "name"]);
        assert_eq!(values(&plan_of("list --output ")), ["table", "wide", "json", "yaml", "name"]);
        assert!(values(&plan_of("create s --data-channel ")).contains(&"MutualTLS"));
        assert!(values(&plan_of("completion ")).contains(&"bash"));
        assert_eq!(plan_of("get --context "), Plan::Contexts(Scope::default()));
        let kc = Scope { kubeconfig: Some("/k".into()), ..Scope::default() };
        assert_eq!(plan_of("create s --kubeconfig /k --cons-context "), Plan::Contexts(kc));
        assert!(values(&plan_of("list -ojson --no-headers -")).len() > 3);
        assert_eq!(plan_of("hello --server-cert "), Plan::Files);
        let scope = Scope { context: Some("aps".into()), namespace: Some("science".into()), kubeconfig: None };
        assert_eq!(plan_of("describe --context aps -n science "), Plan::Streams(scope.clone()));
        assert_eq!(plan_of("get --context=aps --namespace=science r"), Plan::Streams(scope));
        let gw = Scope { context: Some("alcf".into()), ..Scope::default() };
        assert_eq!(plan_of("create s --cons-context alcf --cons-gateway "), Plan::Gateways(gw));
        // Past the one positional: nothing more.
        assert_eq!(values(&plan_of("get run-42 ")), Vec::<&str>::new());
    }

    #[test]
    fn cobra_protocol() {
        let items = vec![("create".to_owned(), "Create a stream".to_owned()), ("get".to_owned(), String::new())];
        assert_eq!(render(&items, "", NO_FILES), "create\tCreate a stream\nget\n:4\n");
        assert_eq!(render(&items, "cr", NO_FILES), "create\tCreate a stream\n:4\n");
        assert_eq!(render(&[], "", FILES), ":0\n");
    }
}
