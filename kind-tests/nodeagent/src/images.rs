//! Image → local program mapping (pure).
//!
//! A container image names a program installed on this machine. Patterns use
//! `*` as the only wildcard and are tried in order; the first match wins. A
//! pattern matches either the whole image reference or its last path segment
//! (`ghcr.io/scistream/s2ds:0.1` → `s2ds:0.1`), so `haproxy:*` also matches
//! `docker.io/library/haproxy:2.9`.
//!
//! A rule also picks the runtime: a local program (the default), or the
//! image itself run with podman (`runtime: podman`), for images built on this
//! machine (nothing can be pulled here).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How the containers of matching images run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// A local program in the node's namespaces (`program`, `args`).
    #[default]
    Process,
    /// The image itself, with `podman run --pull never` (`program` and `args` unused).
    Podman,
}

/// One mapping rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRule {
    /// Image pattern (`*` wildcard).
    pub image: String,
    /// Program run when the container has no `command` (process runtime only).
    #[serde(default)]
    pub program: PathBuf,
    /// Arguments put before the container's `args` (process runtime only).
    #[serde(default)]
    pub args: Vec<String>,
    /// The runtime (default: process).
    #[serde(default)]
    pub runtime: Runtime,
}

impl ImageRule {
    /// `image` run as the local `program`.
    pub fn process(image: &str, program: impl Into<PathBuf>) -> Self {
        ImageRule { image: image.into(), program: program.into(), args: vec![], runtime: Runtime::Process }
    }

    /// `image` run from the image itself with podman.
    pub fn podman(image: &str) -> Self {
        ImageRule { image: image.into(), program: PathBuf::new(), args: vec![], runtime: Runtime::Podman }
    }

    /// Why the rule cannot be used, if it cannot: a process rule needs a program, and a
    /// podman rule takes neither program nor args (the image has its own entrypoint; a
    /// silently ignored field would hide a mistake).
    fn problem(&self) -> Option<String> {
        match self.runtime {
            Runtime::Process if self.program.as_os_str().is_empty() => {
                Some(format!("image rule {:?} has no program (or add runtime: podman)", self.image))
            }
            Runtime::Podman if !self.program.as_os_str().is_empty() || !self.args.is_empty() => Some(format!(
                "image rule {:?} with runtime podman takes no program or args (the image's entrypoint runs)",
                self.image
            )),
            _ => None,
        }
    }
}

/// An ordered list of [`ImageRule`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMap {
    /// Rules, first match wins.
    pub rules: Vec<ImageRule>,
}

/// What to execute for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Program path.
    pub program: PathBuf,
    /// Its arguments (without argv\[0\]).
    pub args: Vec<String>,
}

impl ImageMap {
    /// The Debian programs for the relay images (`haproxy:*`, `nginx:*`,
    /// `*stunnel*`), plus `*s2ds*` → `s2ds` when given.
    pub fn with_defaults(s2ds: Option<&Path>) -> Self {
        let mut m = ImageMap::default();
        if let Some(p) = s2ds {
            m = m.rule("*s2ds*", p);
        }
        m.rule("haproxy:*", "/usr/sbin/haproxy")
            .rule("nginx:*", "/usr/sbin/nginx")
            .rule("*stunnel*", "/usr/bin/stunnel4")
    }

    /// Appends a rule (takes precedence only over rules added later).
    pub fn rule(mut self, image: &str, program: impl Into<PathBuf>) -> Self {
        self.rules.push(ImageRule::process(image, program));
        self
    }

    /// Puts a rule first, ahead of every existing one.
    pub fn prepend(&mut self, rule: ImageRule) {
        self.rules.insert(0, rule);
    }

    /// Parses a YAML mapping file: a list of `{image, program, args?}` or
    /// `{image, runtime: podman}`; the error names the file's problem.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let rules: Vec<ImageRule> = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        match rules.iter().find_map(ImageRule::problem) {
            Some(problem) => Err(problem),
            None => Ok(ImageMap { rules }),
        }
    }

    /// Whether any rule runs images with podman.
    pub fn uses_podman(&self) -> bool {
        self.rules.iter().any(|r| r.runtime == Runtime::Podman)
    }

    /// The runtime of `image`'s containers: that of its rule, else the process runtime (a
    /// container with a `command` runs without a rule).
    pub fn runtime(&self, image: &str) -> Runtime {
        self.lookup(image).map_or(Runtime::Process, |r| r.runtime)
    }

    /// The rule for `image`, if any.
    pub fn lookup(&self, image: &str) -> Option<&ImageRule> {
        let last = image.rsplit('/').next().unwrap_or(image);
        self.rules.iter().find(|r| glob_match(&r.image, image) || glob_match(&r.image, last))
    }

    /// What to run for a container with this image, `command` and `args`,
    /// Kubernetes-style: `command` replaces the entrypoint (and its default
    /// args), `args` replace the default args.
    pub fn resolve(&self, image: &str, command: &[String], args: &[String]) -> Option<Invocation> {
        if let Some((first, rest)) = command.split_first() {
            let mut a = rest.to_vec();
            a.extend_from_slice(args);
            return Some(Invocation { program: PathBuf::from(first), args: a });
        }
        let rule = self.lookup(image)?;
        let mut a = rule.args.clone();
        a.extend_from_slice(args);
        Some(Invocation { program: rule.program.clone(), args: a })
    }

    /// What an exec command (a probe's or a lifecycle hook's) runs for `program` in a
    /// container of `image` under the process runtime, which has no image filesystem: the
    /// image's own program, named by its path inside the image (`/s2ds` in the s2ds image),
    /// is the rule's local program (the built `s2ds`); any other program runs as named.
    pub fn exec_program(&self, image: &str, program: &str) -> PathBuf {
        let named = Path::new(program);
        match self.lookup(image) {
            Some(rule)
                if rule.runtime == Runtime::Process
                    && named.is_absolute()
                    && named.file_name().is_some()
                    && named.file_name() == rule.program.file_name() =>
            {
                rule.program.clone()
            }
            _ => named.to_path_buf(),
        }
    }
}

/// `*`-only glob match of the whole `text`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_commands_name_the_images_program_by_its_path_in_the_image() {
        let mut m = ImageMap::with_defaults(Some(Path::new("/work/target/release/s2ds")));
        m.prepend(ImageRule::podman("s2ds:podman"));
        let cases = [
            ("ghcr.io/scistream/s2ds:0.1", "/s2ds", "/work/target/release/s2ds"),
            ("ghcr.io/scistream/s2ds:0.1", "/bin/s2ds", "/work/target/release/s2ds"),
            ("ghcr.io/scistream/s2ds:0.1", "s2ds", "s2ds"),
            ("ghcr.io/scistream/s2ds:0.1", "/bin/true", "/bin/true"),
            ("haproxy:2.9", "/usr/local/sbin/haproxy", "/usr/sbin/haproxy"),
            ("haproxy:2.9", "/s2ds", "/s2ds"),
            ("s2ds:podman", "/s2ds", "/s2ds"),
            ("unknown:1", "/s2ds", "/s2ds"),
        ];
        for (image, program, runs) in cases {
            assert_eq!(m.exec_program(image, program), PathBuf::from(runs), "{image} {program}");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("haproxy:*", "haproxy:2.9"));
        assert!(glob_match("*s2ds*", "ghcr.io/scistream/s2ds:0.1"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxcyyb"));
        assert!(!glob_match("ab*ba", "aba"));
        assert!(glob_match("socat", "socat"));
        assert!(!glob_match("socat", "socat:1"));
    }

    #[test]
    fn defaults_map_relay_images() {
        let m = ImageMap::with_defaults(Some(Path::new("/bin/s2ds")));
        let p = |i: &str| m.lookup(i).map(|r| r.program.clone());
        assert_eq!(p("ghcr.io/scistream/s2ds:0.1"), Some("/bin/s2ds".into()));
        assert_eq!(p("docker.io/library/haproxy:2.9"), Some("/usr/sbin/haproxy".into()));
        assert_eq!(p("nginx:1.27"), Some("/usr/sbin/nginx".into()));
        assert_eq!(p("dweomer/stunnel:latest"), Some("/usr/bin/stunnel4".into()));
        assert_eq!(p("ghcr.io/scistream/stunnel:0.1.0"), Some("/usr/bin/stunnel4".into()));
        assert_eq!(p("busybox"), None);
    }

    #[test]
    fn command_replaces_entrypoint_and_args_append() {
        let m = ImageMap::default().rule("py", "/usr/bin/python3");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let inv = m.resolve("py", &[], &s(&["-m", "http.server"])).expect("mapped");
        assert_eq!(inv.program, PathBuf::from("/usr/bin/python3"));
        assert_eq!(inv.args, s(&["-m", "http.server"]));
        let inv = m.resolve("unknown", &s(&["/bin/sh", "-c"]), &s(&["exit 3"])).expect("command");
        assert_eq!(inv.program, PathBuf::from("/bin/sh"));
        assert_eq!(inv.args, s(&["-c", "exit 3"]));
        assert!(m.resolve("unknown", &[], &[]).is_none());
    }

    #[test]
    fn yaml_file() {
        let m = ImageMap::from_yaml("- image: 'socat*'\n  program: /usr/bin/socat\n  args: [-d]\n").expect("yaml");
        let inv = m.resolve("socat:1", &[], &["x".into()]).expect("mapped");
        assert_eq!(inv.args, vec!["-d".to_string(), "x".to_string()]);
        assert_eq!(m.runtime("socat:1"), Runtime::Process);
        assert!(!m.uses_podman());
    }

    #[test]
    fn yaml_podman_rules() {
        let m = ImageMap::from_yaml(
            "- image: 'ghcr.io/scistream/*'\n  runtime: podman\n- image: '*s2ds*'\n  program: /bin/s2ds\n",
        )
        .expect("yaml");
        assert_eq!(m.runtime("ghcr.io/scistream/s2ds:0.1.0"), Runtime::Podman);
        assert_eq!(m.runtime("example.org/s2ds:1"), Runtime::Process);
        assert_eq!(m.runtime("unmapped"), Runtime::Process);
        assert!(m.uses_podman());
        let e = ImageMap::from_yaml("- image: x\n").expect_err("no program");
        assert!(e.contains("has no program"), "{e}");
        let e = ImageMap::from_yaml("- image: x\n  runtime: podman\n  program: /bin/x\n").expect_err("program");
        assert!(e.contains("takes no program"), "{e}");
        assert!(ImageMap::from_yaml("- image: x\n  runtime: docker\n").is_err());
    }
}
