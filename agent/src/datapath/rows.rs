//! Owned ports' counter rows (`PORT_ROWS`, a per-CPU array): a port is given a row when it is
//! claimed, and its owner slot names it, so the programs count the port's packets with one
//! array lookup instead of a hash lookup. Which rows are given is kept in `PORT_ROW_USE`, a
//! bitmap only the agent reads and writes (under the host lock); each row also carries its
//! holder, so a row read alone says whose it is.
//!
//! The array is allocated whole, for every CPU, when the datapath is loaded: its size is a
//! setting (`--traffic-rows`), and ports claimed once every row is given are counted in the
//! per-CPU hashes instead, exactly but more slowly.
//!
//! Crash safety: a row is marked given before any slot names it, and a slot stops naming it
//! before it is marked free; a crash in between leaves a row marked that nothing names, which
//! [`PortRows::sweep`] frees.
use std::path::Path;

use aya::{
    maps::{Array, MapData, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use hostnetd_common::{
    traffic::{PortRow, TrafficKey},
    MapName, NO_ROW,
};

use super::{
    error::{map_error, DatapathError},
    pins::{open_typed, per_cpu},
};

/// The bitmap's pinned name beside the programs' maps.
pub const ROW_USE: &str = "PORT_ROW_USE";
/// Rows the bitmap can describe, row 0 ([`NO_ROW`]) included.
const BITMAP_BITS: usize = 65536;
/// The largest `--traffic-rows`: every bit but row 0's.
pub const MAX_PORT_ROWS: u32 = BITMAP_BITS as u32 - 1;
/// What the default row count may cost in memory, all CPUs together.
const DEFAULT_BUDGET_BYTES: usize = 16 << 20;
/// The default is at most this many rows (owned ports), however many the budget would allow.
const DEFAULT_MAX_ROWS: u32 = 16384;

/// Which rows are given: bit `n` for row `n`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RowUse {
    words: [u64; BITMAP_BITS / 64],
}
// SAFETY: plain words; every bit pattern is valid.
unsafe impl aya::Pod for RowUse {}

impl Default for RowUse {
    fn default() -> Self {
        Self {
            words: [0; BITMAP_BITS / 64],
        }
    }
}

impl RowUse {
    pub fn is_given(&self, row: u32) -> bool {
        let row = row as usize;
        row < BITMAP_BITS && self.words[row / 64] & (1 << (row % 64)) != 0
    }

    /// The lowest free row below `rows` (the array's size), marked given.
    pub fn take(&mut self, rows: u32) -> Option<u32> {
        let rows = (rows as usize).min(BITMAP_BITS);
        for (index, word) in self.words.iter_mut().enumerate() {
            let base = index * 64;
            if base >= rows {
                return None;
            }
            // Row 0 names no row: never given.
            let free = !*word & if index == 0 { !1 } else { !0 };
            if free == 0 {
                continue;
            }
            let row = base + free.trailing_zeros() as usize;
            if row >= rows {
                return None;
            }
            *word |= 1 << (row % 64);
            return Some(row as u32);
        }
        None
    }

    pub fn give_back(&mut self, row: u32) {
        let row = row as usize;
        if row < BITMAP_BITS {
            self.words[row / 64] &= !(1 << (row % 64));
        }
    }

    /// Every given row, in order.
    pub fn given(&self) -> impl Iterator<Item = u32> + '_ {
        (self.words.iter().enumerate()).flat_map(|(index, &word)| {
            (0..64)
                .filter(move |bit| word & (1 << bit) != 0)
                .map(move |bit| (index * 64 + bit) as u32)
        })
    }
}

/// The rows `--traffic-rows` gives when unset: as many as a 16 MiB budget pays for on this
/// host's CPUs, at most 16384 (2730 on a 64-CPU host, 16384 up to 10 CPUs).
pub fn default_port_rows() -> u32 {
    let cpus = nr_cpus().unwrap_or(1).max(1);
    let affordable = DEFAULT_BUDGET_BYTES / (size_of::<PortRow>() * cpus);
    u32::try_from(affordable)
        .unwrap_or(u32::MAX)
        .clamp(1, DEFAULT_MAX_ROWS)
}

/// What the per-CPU array costs for `rows` rows on this host.
pub fn port_rows_bytes(rows: u32) -> usize {
    (rows as usize + 1) * size_of::<PortRow>() * nr_cpus().unwrap_or(1)
}

/// Creates the empty bitmap beside freshly loaded maps.
pub fn create_row_use(maps: &Path) -> Result<(), DatapathError> {
    let mut bitmap: Array<MapData, RowUse> = Array::create(1, 0).map_err(map_error(ROW_USE))?;
    bitmap
        .set(0, RowUse::default(), 0)
        .map_err(map_error(ROW_USE))?;
    let path = maps.join(ROW_USE);
    bitmap
        .pin(&path)
        .map_err(|source| DatapathError::Pin { path, source })
}

/// How many counter rows the datapath pinned under `pin_root` has, and how many are given.
pub fn read_row_use(pin_root: &Path) -> Result<(u32, u32), DatapathError> {
    let rows = PortRows::open(&pin_root.join("maps"))?;
    let given = rows.given()?.given().count();
    Ok((rows.capacity(), given as u32))
}

pub struct PortRows {
    rows: PerCpuArray<MapData, PortRow>,
    bitmap: Array<MapData, RowUse>,
    /// The array's size, row 0 included.
    size: u32,
    /// The bitmap as last read or written by this process (under the host lock, nobody else
    /// writes it).
    given: Option<RowUse>,
}

impl PortRows {
    pub fn open(maps: &Path) -> Result<Self, DatapathError> {
        let name = MapName::PortRows.as_str();
        let data = MapData::from_pin(maps.join(name)).map_err(map_error(name))?;
        let size = data.info().map_err(map_error(name))?.max_entries();
        let rows = aya::maps::Map::from_map_data(data)
            .and_then(PerCpuArray::try_from)
            .map_err(map_error(name))?;
        Ok(Self {
            rows,
            bitmap: open_typed(maps, ROW_USE)?,
            size,
            given: None,
        })
    }

    /// Rows an owned port can be given, as the array was created.
    pub fn capacity(&self) -> u32 {
        self.size.saturating_sub(1)
    }

    fn bitmap(&mut self) -> Result<&mut RowUse, DatapathError> {
        if self.given.is_none() {
            let read = self.bitmap.get(&0, 0).map_err(map_error(ROW_USE))?;
            self.given = Some(read);
        }
        Ok(self.given.as_mut().expect("read above"))
    }

    /// The rows given now.
    pub fn given(&self) -> Result<RowUse, DatapathError> {
        match self.given {
            Some(given) => Ok(given),
            None => self.bitmap.get(&0, 0).map_err(map_error(ROW_USE)),
        }
    }

    /// A zeroed row for `holder`, marked given; [`NO_ROW`] when every row is.
    pub fn take(&mut self, holder: TrafficKey) -> Result<u32, DatapathError> {
        let size = self.size;
        let bitmap = self.bitmap()?;
        let Some(row) = bitmap.take(size) else {
            return Ok(NO_ROW);
        };
        let marked = *bitmap;
        self.bitmap.set(0, marked, 0).map_err(map_error(ROW_USE))?;
        let fresh = PortRow {
            holder,
            ..PortRow::default()
        };
        let cpus = nr_cpus().map_err(|(_, source)| DatapathError::Io {
            action: "count the CPUs in",
            path: "/sys/devices/system/cpu/possible".into(),
            source,
        })?;
        let values = per_cpu(vec![fresh; cpus], MapName::PortRows.as_str())?;
        self.rows
            .set(row, values, 0)
            .map_err(map_error(MapName::PortRows.as_str()))?;
        Ok(row)
    }

    /// Marks `rows` free; no slot may name them any more.
    pub fn give_back(&mut self, rows: &[u32]) -> Result<(), DatapathError> {
        if rows.is_empty() {
            return Ok(());
        }
        let bitmap = self.bitmap()?;
        for &row in rows {
            bitmap.give_back(row);
        }
        let marked = *bitmap;
        self.bitmap.set(0, marked, 0).map_err(map_error(ROW_USE))
    }

    /// A row's counters on every CPU (and its holder, the same on each).
    pub fn read(&self, row: u32) -> Result<PerCpuValues<PortRow>, DatapathError> {
        self.rows
            .get(&row, 0)
            .map_err(map_error(MapName::PortRows.as_str()))
    }

    /// Frees the given rows `named` does not confirm: `named(row, holder)` says whether the
    /// holder's owner slot still names the row. Left by a process that died half-way.
    pub fn sweep(
        &mut self,
        named: impl Fn(u32, &TrafficKey) -> Result<bool, DatapathError>,
    ) -> Result<Vec<u32>, DatapathError> {
        let mut stray = Vec::new();
        for row in self.given()?.given().collect::<Vec<_>>() {
            let holder = self.read(row)?.first().map(|copy| copy.holder);
            if !holder.is_some_and(|holder| named(row, &holder).unwrap_or(true)) {
                stray.push(row);
            }
        }
        self.give_back(&stray)?;
        Ok(stray)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_given_lowest_first_never_row_zero() {
        let mut given = RowUse::default();
        assert_eq!(given.take(4), Some(1));
        assert_eq!(given.take(4), Some(2));
        assert_eq!(given.take(4), Some(3));
        assert_eq!(given.take(4), None, "an array of 4 has rows 1-3");
        given.give_back(2);
        assert!(!given.is_given(2));
        assert_eq!(given.take(4), Some(2));
        assert_eq!(given.given().collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn rows_cross_words_up_to_the_bitmap() {
        let mut given = RowUse::default();
        let all: Vec<u32> = std::iter::from_fn(|| given.take(200)).collect();
        assert_eq!(all, (1..200).collect::<Vec<_>>());
        given.give_back(130);
        assert_eq!(given.take(200), Some(130));
        let mut full = RowUse::default();
        let count = std::iter::from_fn(|| full.take(u32::MAX)).count();
        assert_eq!(count, MAX_PORT_ROWS as usize);
        assert!(full.is_given(MAX_PORT_ROWS));
        assert!(!full.is_given(0));
    }

    #[test]
    fn an_empty_array_gives_nothing() {
        assert_eq!(RowUse::default().take(1), None);
        assert_eq!(RowUse::default().take(0), None);
    }

    #[test]
    fn the_default_fits_its_budget() {
        let rows = default_port_rows();
        assert!((1..=DEFAULT_MAX_ROWS).contains(&rows));
        assert!(port_rows_bytes(rows - 1) <= DEFAULT_BUDGET_BYTES);
    }
}
