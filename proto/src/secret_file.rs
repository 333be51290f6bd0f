//! The one writer of secret files (node identity and seal keys, the dev issuer's key, an app
//! owner's key, decrypted secrets, root secrets), shared by every binary of the workspace.
//!
//! The file is created with mode 0600 (on Unix) before any byte is written, written in full and
//! fsynced, and only then put in place: a crash leaves either the old file or the new one, never a
//! truncated or world-readable secret. [`Existing::Replace`] writes a temporary file next to the
//! target and renames it over; [`Existing::Refuse`] creates the target itself and fails if it
//! exists.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// What to do when the file exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Fail (`io::ErrorKind::AlreadyExists`): keys are never overwritten.
    Refuse,
    /// Replace it atomically (a temporary file in the same directory, renamed over it).
    Replace,
}

fn create_private(path: &Path) -> io::Result<fs::File> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Writes `bytes` to `path` as described in the module docs.
pub fn write(path: &Path, bytes: &[u8], existing: Existing) -> io::Result<()> {
    let target = match existing {
        Existing::Refuse => path.to_path_buf(),
        Existing::Replace => {
            let name = path.file_name().ok_or_else(|| io::Error::other("not a file path"))?;
            let mut tmp = name.to_os_string();
            tmp.push(format!(".tmp-{}", std::process::id()));
            path.with_file_name(tmp)
        }
    };
    let written = (|| {
        let mut f = create_private(&target)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        if existing == Existing::Replace {
            let _ = fs::remove_file(&target);
        }
        return Err(e);
    }
    if existing == Existing::Replace {
        fs::rename(&target, path)?;
    }
    // The directory entry too, where the platform allows.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_refused_or_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("kms-secret-file-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let key = dir.join("owner.key");
        write(&key, b"first", Existing::Refuse).unwrap();
        let e = write(&key, b"second", Existing::Refuse).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&key).unwrap(), b"first");
        // A longer file replaced by a shorter one leaves no tail of the old.
        write(&key, b"a much longer secret", Existing::Replace).unwrap();
        write(&key, b"short", Existing::Replace).unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"short");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Even a file that existed with a wide mode ends up 0600.
            fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
            write(&key, b"again", Existing::Replace).unwrap();
            assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left behind");
        fs::remove_dir_all(&dir).unwrap();
    }
}
