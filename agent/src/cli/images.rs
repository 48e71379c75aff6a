//! pull, load, images and rmi.
use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use hostnetd::{
    api::client::{Client, ClientError},
    api::{ImageView, LoadRequest, PullRequest},
    images::Removed,
};

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Reach this registry (HOST[:PORT]) over plain HTTP; repeatable. For local registries.
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Only print the image ID.
    #[arg(short, long)]
    quiet: bool,
    /// [REGISTRY[:PORT]/]REPOSITORY[:TAG|@DIGEST]; docker.io is the default registry.
    image: String,
}

impl PullArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        hostnetd::images::normalize(&self.image)?;
        Ok(())
    }
}

pub fn pull(client: &Client, args: PullArgs) -> anyhow::Result<ExitCode> {
    let image = pull_image(client, &args.image, &args.insecure_registries, args.quiet)?;
    if args.quiet {
        println!("{}", image.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// Pulls through the daemon, saying what it does on stderr unless `quiet`.
pub fn pull_image(
    client: &Client,
    reference: &str,
    insecure_registries: &[String],
    quiet: bool,
) -> Result<ImageView, ClientError> {
    if !quiet {
        eprintln!("Pulling {reference}");
    }
    let request = PullRequest {
        reference: reference.to_string(),
        insecure_registries: insecure_registries.to_vec(),
    };
    let image: ImageView = client.post("/v1/images/pull", Some(&request))?;
    if !quiet {
        eprintln!(
            "Pulled {reference}: {} ({} layers, {})",
            image.id,
            image.layers.len(),
            human_size(image.size)
        );
    }
    Ok(image)
}

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// A docker-archive or oci-archive tarball (plain or gzip) [default: standard input].
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Only print the image IDs.
    #[arg(short, long)]
    quiet: bool,
}

impl LoadArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        if let Some(path) = &self.input {
            anyhow::ensure!(
                path.is_file(),
                "{} is not a file: give an image archive made by `docker save`, `podman save` or `skopeo copy`",
                path.display()
            );
        }
        Ok(())
    }
}

pub fn load(client: &Client, args: LoadArgs) -> anyhow::Result<ExitCode> {
    let (path, _spooled) = match &args.input {
        Some(path) => {
            let path = std::path::absolute(path)
                .with_context(|| format!("cannot resolve {}", path.display()))?;
            (path, None)
        }
        None => spool_stdin()?,
    };
    let request = LoadRequest {
        path: path.display().to_string(),
    };
    let images: Vec<ImageView> = client.post("/v1/images/load", Some(&request))?;
    for image in &images {
        match (args.quiet, image.tags.as_slice()) {
            (true, _) | (false, []) => println!("Loaded image ID: {}", image.id),
            (false, tags) => tags.iter().for_each(|tag| println!("Loaded image: {tag}")),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Standard input copied to a file the daemon can read; removed when the guard drops.
fn spool_stdin() -> anyhow::Result<(PathBuf, Option<TempFile>)> {
    anyhow::ensure!(
        !std::io::stdin().is_terminal(),
        "no archive: give -i FILE or pipe one in (`hostnetd load < image.tar`)"
    );
    let path = std::env::temp_dir().join(format!("hostnetd-load-{}.tar", std::process::id()));
    let guard = TempFile(path.clone());
    let mut file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::copy(&mut std::io::stdin().lock(), &mut file)
        .context("cannot read the archive from standard input")?;
    Ok((path, Some(guard)))
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    /// Only print image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// `json` prints the full records.
    #[arg(long, value_parser = ["table", "json"], default_value = "table")]
    format: String,
}

pub fn images(client: &Client, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let images: Vec<ImageView> = client.get("/v1/images")?;
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.quiet {
        images
            .iter()
            .for_each(|image| println!("{}", short_id(&image.id)));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<40}  {:<16}  {:<12}  {:>10}  EXPOSED",
        "REPOSITORY", "TAG", "IMAGE ID", "SIZE"
    );
    for image in &images {
        let exposed: Vec<&str> = image
            .config
            .exposed_ports
            .keys()
            .map(String::as_str)
            .collect();
        let names = if image.tags.is_empty() {
            vec![("<none>".to_string(), "<none>".to_string())]
        } else {
            image.tags.iter().map(|tag| split_tag(tag)).collect()
        };
        for (repository, tag) in names {
            println!(
                "{:<40}  {:<16}  {:<12}  {:>10}  {}",
                repository,
                tag,
                short_id(&image.id),
                human_size(image.size),
                exposed.join(",")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct RmiArgs {
    /// Also remove images that only exited containers use.
    #[arg(short, long)]
    force: bool,
    /// Names (`nginx:latest`) or IDs.
    #[arg(required = true)]
    images: Vec<String>,
}

pub fn rmi(client: &Client, args: RmiArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for reference in &args.images {
        let path = format!("{}?force={}", image_path(reference), args.force);
        match client.delete::<Removed>(&path) {
            Ok(removed) => {
                removed
                    .untagged
                    .iter()
                    .for_each(|tag| println!("Untagged: {tag}"));
                removed
                    .deleted
                    .iter()
                    .for_each(|id| println!("Deleted: {id}"));
            }
            Err(error) => {
                eprintln!("hostnetd: {reference}: {error}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The API path of an image; references keep their `/`, `:` and `@`.
pub fn image_path(reference: &str) -> String {
    format!("/v1/images/{}", path_encode(reference))
}

/// `text` for a URL path, percent-encoding all but what names and references are made of.
pub fn path_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' | b':' | b'@' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn split_tag(name: &str) -> (String, String) {
    if let Some((repository, digest)) = name.split_once('@') {
        return (repository.to_string(), digest.to_string());
    }
    match name.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository.to_string(), tag.to_string()),
        _ => (name.to_string(), "<none>".to_string()),
    }
}

fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..12.min(hex.len())]
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_after_the_registry_port() {
        assert_eq!(split_tag("nginx:latest"), ("nginx".into(), "latest".into()));
        assert_eq!(
            split_tag("127.0.0.1:20600/app:v2"),
            ("127.0.0.1:20600/app".into(), "v2".into())
        );
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_500_000), "1.5MB");
    }
}
