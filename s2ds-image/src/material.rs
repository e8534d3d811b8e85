//! Where a stream's TLS files are read from: the filesystem (a relay serving one stream,
//! with its Secret mounted), or the contents the control plane sent for the paths its config
//! names (a stream of the shared relay, [`crate::node`]): keys then never touch a disk, and
//! one config format and one renderer serve both.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

/// The source of the files a config names.
#[derive(Clone, Default)]
pub enum Material {
    /// Read them from the filesystem.
    #[default]
    Disk,
    /// Their contents, by path, as sent (cleared from memory when the last user drops them).
    Sent(Arc<BTreeMap<PathBuf, Zeroizing<Vec<u8>>>>),
}

impl Material {
    /// Contents sent for these paths.
    pub fn sent(files: impl IntoIterator<Item = (PathBuf, Vec<u8>)>) -> Self {
        Self::Sent(Arc::new(files.into_iter().map(|(p, c)| (p, Zeroizing::new(c))).collect()))
    }

    /// The contents of `path`.
    pub fn read(&self, path: &Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
        match self {
            Self::Disk => std::fs::read(path).map(Zeroizing::new),
            Self::Sent(files) => files.get(path).cloned().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{} is not among the files sent with this stream", path.display()),
                )
            }),
        }
    }
}

/// Names the paths, never the contents.
impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disk => f.write_str("Disk"),
            Self::Sent(files) => f.debug_tuple("Sent").field(&files.keys().collect::<Vec<_>>()).finish(),
        }
    }
}

/// Equal when the same paths hold the same contents (a resent stream whose files did not
/// change needs no reload).
impl PartialEq for Material {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Disk, Self::Disk) => true,
            (Self::Sent(a), Self::Sent(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|((pa, ca), (pb, cb))| pa == pb && **ca == **cb)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_files_are_read_by_path_and_never_printed() {
        let m = Material::sent([(PathBuf::from("/tls/tls.key"), b"SECRET KEY".to_vec())]);
        assert_eq!(&**m.read(Path::new("/tls/tls.key")).unwrap(), b"SECRET KEY");
        let e = m.read(Path::new("/tls/other")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(e.to_string().contains("/tls/other"), "{e}");
        let shown = format!("{m:?}");
        assert!(shown.contains("/tls/tls.key") && !shown.contains("SECRET"), "{shown}");
        assert_eq!(m, Material::sent([(PathBuf::from("/tls/tls.key"), b"SECRET KEY".to_vec())]));
        assert_ne!(m, Material::sent([(PathBuf::from("/tls/tls.key"), b"OTHER KEY".to_vec())]));
        assert_ne!(m, Material::Disk);
    }
}
