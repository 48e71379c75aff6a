//! Content digests: `sha256:<hex>`, the algorithm every registry and archive uses in practice.
use std::{
    fmt,
    io::{self, Read},
    path::Path,
    str::FromStr,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A verified-shape digest. Only sha256 is accepted: a digest we cannot check is refused
/// rather than trusted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as docker shows image IDs.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }

    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub fn of_file(path: &Path) -> io::Result<Self> {
        let mut reader = HashingReader::new(std::fs::File::open(path)?);
        io::copy(&mut reader, &mut io::sink())?;
        Ok(reader.finish())
    }

    fn from_hasher(hasher: Sha256) -> Self {
        let hex = hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self { hex }
    }
}

impl FromStr for Digest {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text.strip_prefix("sha256:").ok_or_else(|| {
            format!("unsupported digest {text:?}: only sha256:<64 hex digits> is accepted")
        })?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(Self { hex: hex.into() })
        } else {
            Err(format!(
                "malformed digest {text:?}: expected sha256:<64 lowercase hex digits>"
            ))
        }
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> Self {
        digest.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// Hashes everything read through it, so content is verified in the same pass that uses it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads what is left (a tar stream's trailing padding counts towards its digest), then
    /// returns the digest of everything.
    pub fn finish_reading(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let bytes = self.bytes;
        Ok((self.finish(), bytes))
    }

    pub fn finish(self) -> Digest {
        Digest::from_hasher(self.hasher)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_and_print() {
        let empty = Digest::of_bytes(b"");
        assert_eq!(
            empty.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(empty.to_string().parse::<Digest>().unwrap(), empty);
        assert_eq!(empty.short(), "e3b0c44298fc");
        for bad in ["e3b0", "sha512:abcd", "sha256:XYZ", "sha256:e3b0c442"] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn hashing_reader_hashes_what_passes() {
        let mut reader = HashingReader::new(&b"hello"[..]);
        let mut first = [0u8; 2];
        reader.read_exact(&mut first).unwrap();
        let (digest, bytes) = reader.finish_reading().unwrap();
        assert_eq!(bytes, 5);
        assert_eq!(digest, Digest::of_bytes(b"hello"));
    }
}
