//! nginx as the benchmark runs it: one root filesystem, a config per configuration.
use std::{
    fs,
    path::{Path, PathBuf},
};

use super::plan::Config;

/// nginx's own pinning of its one worker, as a CPU mask: CPU 1.
const NGINX_WORKER_AFFINITY: &str = "10";

/// The sample image's root filesystem, unpacked for H0 and NAT, and the benchmark's nginx
/// config: one worker pinned to the server CPU, no access log (in a container it would be
/// copied through the monitor into the log, on the host it would not: logging is not
/// networking), the page's file descriptor cached (without, every request opens the file, and
/// through the image's overlayfs in H1 that alone cost 15-20% of the requests per second: a
/// filesystem cost, not a network one), listening on every address.
pub struct Nginx {
    pub rootfs: PathBuf,
    confs: PathBuf,
}

impl Nginx {
    pub fn prepare(image: &Path, scratch: &Path) -> anyhow::Result<Self> {
        let rootfs = scratch.join("nginx-rootfs");
        super::image::unpack_oci_archive(image, &rootfs)?;
        // runc gives a container /dev and a private /tmp; the chroot gets what nginx uses.
        for dir in ["dev", "tmp", "run", "bench"] {
            fs::create_dir_all(rootfs.join(dir))?;
        }
        fs::write(rootfs.join("dev/null"), "")?;
        Ok(Self {
            rootfs,
            confs: scratch.join("nginx-conf"),
        })
    }

    /// Writes the config for `config`; returns its path as the server sees it (inside the
    /// chroot for H0 and NAT, the host directory mounted at /bench in a container).
    pub fn config_for(&self, config: Config, port: u16) -> anyhow::Result<PathBuf> {
        let name = format!("nginx-{}.conf", config.key());
        let text = format!(
            "user www-data;\nworker_processes 1;\nworker_cpu_affinity {NGINX_WORKER_AFFINITY};\n\
             pid /run/nginx-{key}.pid;\nerror_log stderr notice;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  include /etc/nginx/mime.types;\n  access_log off;\n  sendfile on;\n  \
             open_file_cache max=64 inactive=600s;\n  open_file_cache_valid 600s;\n  \
             server {{\n    listen {port};\n    root /usr/share/nginx/html;\n    index index.html;\n  }}\n}}\n",
            key = config.key()
        );
        if config.is_containerized() {
            fs::create_dir_all(&self.confs)?;
            let path = self.confs.join(name);
            fs::write(&path, text)?;
            return Ok(path);
        }
        fs::write(self.rootfs.join("bench").join(&name), text)?;
        Ok(Path::new("/bench").join(name))
    }
}
