//! hostnetd's pins on bpffs: maps opened by their pinned name, directories made for links.
use std::{fs, path::Path};

use aya::maps::{Map, MapData};

use super::error::{map_error, DatapathError};

pub fn open_map(maps: &Path, name: &'static str) -> Result<Map, DatapathError> {
    let data = MapData::from_pin(maps.join(name)).map_err(map_error(name))?;
    Map::from_map_data(data).map_err(map_error(name))
}

/// A pinned map as the type `T`.
pub fn open_typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    maps: &Path,
    name: &'static str,
) -> Result<T, DatapathError> {
    T::try_from(open_map(maps, name)?).map_err(map_error(name))
}

pub fn create_dir(path: &Path) -> Result<(), DatapathError> {
    fs::create_dir_all(path).map_err(|source| DatapathError::Io {
        action: "create",
        path: path.into(),
        source,
    })
}
