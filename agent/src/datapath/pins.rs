//! hostnetd's pins on bpffs: maps opened by their pinned name, directories made for links.
use std::{fs, path::Path};

use aya::maps::{Map, MapData, PerCpuValues};

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

/// One value per possible CPU, for writing into the per-CPU map `name`.
pub fn per_cpu<V: aya::Pod>(
    values: Vec<V>,
    name: &'static str,
) -> Result<PerCpuValues<V>, DatapathError> {
    PerCpuValues::try_from(values).map_err(|source| DatapathError::Io {
        action: "write the per-CPU values of",
        path: name.into(),
        source,
    })
}

pub fn create_dir(path: &Path) -> Result<(), DatapathError> {
    fs::create_dir_all(path).map_err(|source| DatapathError::Io {
        action: "create",
        path: path.into(),
        source,
    })
}
