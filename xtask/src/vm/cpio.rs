//! The kernel's initramfs format: a "newc" cpio archive (see the kernel's
//! Documentation/driver-api/early-userspace/buffer-format.rst). Written here rather than with
//! cpio(1) so that the guest's tree can be described as a list of entries whose content comes
//! from anywhere on the host, at whatever path the guest needs, without a staging copy.
use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

/// The file type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// Writes one archive: entries in order (a parent directory before what it holds: the kernel
/// creates each entry in place), then [`CpioWriter::finish`].
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_inode: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_inode: 1,
        }
    }

    /// A directory; `path` is relative to the root ("usr/bin").
    pub fn directory(&mut self, path: &str, permissions: u32) -> io::Result<()> {
        self.header(path, S_IFDIR | permissions, 0)?;
        self.pad()
    }

    /// A symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.header(path, S_IFLNK | 0o777, target.len() as u64)?;
        self.write_all(target.as_bytes())?;
        self.pad()
    }

    /// A regular file of `size` bytes, read from `content` (which must yield exactly that).
    pub fn file(
        &mut self,
        path: &str,
        permissions: u32,
        size: u64,
        content: impl io::Read,
    ) -> io::Result<()> {
        self.header(path, S_IFREG | permissions, size)?;
        let copied = io::copy(&mut content.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: expected {size} bytes, read {copied} (did it change?)"),
            ));
        }
        self.written += copied;
        self.pad()
    }

    /// Ends the archive; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 0)?;
        self.pad()?;
        Ok(self.out)
    }

    fn header(&mut self, path: &str, mode: u32, size: u64) -> io::Result<()> {
        let size = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path}: newc cannot hold files of 4 GiB or more"),
            )
        })?;
        let inode = self.next_inode;
        self.next_inode += 1;
        let name_size = path.len() + 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize
        // check; owned by root, mtime 0: the guest's tree is the same whenever it is built.
        let fields = [
            inode,
            mode,
            0,
            0,
            1,
            0,
            size,
            0,
            0,
            0,
            0,
            name_size as u32,
            0,
        ];
        let mut header = String::with_capacity(110 + name_size);
        header.push_str(MAGIC);
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.write_all(header.as_bytes())?;
        self.write_all(path.as_bytes())?;
        self.write_all(&[0])?;
        self.pad()
    }

    /// Every header and every file's data start on a 4-byte boundary.
    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - self.written % 4) % 4;
        self.write_all(&[0; 3][..padding as usize])
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut CpioWriter<Vec<u8>>) -> io::Result<()>) -> Vec<u8> {
        let mut writer = CpioWriter::new(Vec::new());
        build(&mut writer).unwrap();
        writer.finish().unwrap()
    }

    /// The header field at `index` (0 = ino) of the header starting at `offset`.
    fn field(bytes: &[u8], offset: usize, index: usize) -> u32 {
        let start = offset + 6 + index * 8;
        u32::from_str_radix(std::str::from_utf8(&bytes[start..start + 8]).unwrap(), 16).unwrap()
    }

    #[test]
    fn a_file_entry_has_its_header_name_and_padded_data() {
        let bytes = archive(|w| w.file("init", 0o755, 3, &b"abc"[..]));
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(field(&bytes, 0, 1), S_IFREG | 0o755);
        assert_eq!(field(&bytes, 0, 6), 3, "file size");
        assert_eq!(field(&bytes, 0, 11), 5, "name size with its NUL");
        // 110 header bytes + "init\0" = 115, padded to 116; data 3, padded to 120.
        assert_eq!(&bytes[110..115], b"init\0");
        assert_eq!(&bytes[116..119], b"abc");
        assert_eq!(&bytes[120..126], b"070701", "the trailer starts aligned");
        assert_eq!(&bytes[120 + 110..120 + 121], b"TRAILER!!!\0");
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn symlinks_hold_their_target_and_directories_nothing() {
        let bytes = archive(|w| {
            w.directory("bin", 0o755)?;
            w.symlink("bin/sh", "busybox")
        });
        assert_eq!(field(&bytes, 0, 1), S_IFDIR | 0o755);
        assert_eq!(field(&bytes, 0, 6), 0);
        // 110 header bytes + "bin\0" = 114, padded to 116; then the link's header, name
        // "bin/sh\0" (ending at 116 + 117, padded to 116 + 120) and target.
        let link = 116;
        assert_eq!(field(&bytes, link, 1), S_IFLNK | 0o777);
        assert_eq!(field(&bytes, link, 6), 7);
        assert_eq!(&bytes[link + 110..link + 117], b"bin/sh\0");
        assert_eq!(&bytes[link + 120..link + 127], b"busybox");
        assert_ne!(
            field(&bytes, 0, 0),
            field(&bytes, link, 0),
            "distinct inodes"
        );
    }

    #[test]
    fn a_short_read_is_an_error() {
        let mut writer = CpioWriter::new(Vec::new());
        let error = writer.file("f", 0o644, 10, &b"abc"[..]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
