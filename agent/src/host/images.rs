//! The host's image operations: the store's own plus what needs the containers (which images
//! are in use).
use std::path::Path;

use super::{Host, HostError};
use crate::images::{self, Credentials, ImageError, ImageRecord, ImageUsers, PullOptions, Removed};

impl Host {
    pub fn images(&self) -> Result<Vec<ImageRecord>, HostError> {
        Ok(self.images.list()?)
    }

    pub fn image(&self, reference: &str) -> Result<ImageRecord, HostError> {
        Ok(self.images.resolve(reference)?)
    }

    pub async fn pull_image(
        &self,
        reference: &str,
        options: &PullOptions,
    ) -> Result<ImageRecord, HostError> {
        Ok(images::registry::pull(&self.images, reference, options).await?)
    }

    /// `login`: the credentials are checked against the registry, then stored; returns the
    /// registry's name as stored (`host[:port]`).
    pub async fn login(
        &self,
        registry: &str,
        credentials: &Credentials,
        options: &PullOptions,
    ) -> Result<String, HostError> {
        let registry = images::registry_name(registry)?;
        if credentials.username.is_empty() {
            return Err(HostError::Invalid("no username: give -u USER".into()));
        }
        if credentials.secret.is_empty() {
            return Err(HostError::Invalid(
                "empty password: give the password (--password-stdin reads it from standard input)"
                    .into(),
            ));
        }
        images::login::check(&registry, credentials, options).await?;
        tokio::task::block_in_place(|| options.credentials().store(&registry, credentials))
            .map_err(ImageError::from)?;
        Ok(registry)
    }

    /// `logout`: the registry's stored credentials forgotten; false when there were none.
    pub fn logout(
        &self,
        registry: &str,
        options: &PullOptions,
    ) -> Result<(String, bool), HostError> {
        let registry = images::registry_name(registry)?;
        let erased = options
            .credentials()
            .erase(&registry)
            .map_err(ImageError::from)?;
        Ok((registry, erased))
    }

    pub fn load_images(&self, archive: &Path) -> Result<Vec<ImageRecord>, HostError> {
        if !archive.is_absolute() {
            return Err(HostError::Invalid(format!(
                "the archive path {} must be absolute (it is read by the daemon)",
                archive.display()
            )));
        }
        Ok(images::archive::load_archive(&self.images, archive)?)
    }

    /// `rmi`: refused while a container (live, or exited without `force`) uses the image.
    pub fn remove_image(&self, reference: &str, force: bool) -> Result<Removed, HostError> {
        let records = self.store.list()?;
        Ok(self.images.remove(reference, force, |id| {
            let mut users = ImageUsers {
                live: Vec::new(),
                exited: Vec::new(),
            };
            let id = id.to_string();
            for record in records
                .iter()
                .filter(|r| r.image.as_ref().is_some_and(|i| i.id == id))
            {
                let list = if record.state.is_live() {
                    &mut users.live
                } else {
                    &mut users.exited
                };
                list.push(record.name.clone());
            }
            Ok(users)
        })?)
    }
}
