//! The exact top-k table, built from tile products.
//!
//! Rows are cut into tiles of `tile_rows`. The single-process path computes
//! each tile pair (I, J) with I ≤ J once and feeds both sides, halving the
//! matrix work. A block task (one shard of the table) owns a contiguous run
//! of tiles and computes them against every tile; for J < I it computes the
//! product the single-process path would have computed, (J, I), and reads it
//! by columns, so that every score is bit-for-bit the one the single-process
//! path sees and the two tables are identical.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::IndexError;
use crate::kernel::ScoreKernel;
use crate::matrix::EmbeddingMatrix;
use crate::scan::{scan_tile, Side, TileOrigin};
use crate::table::NeighbourTable;
use crate::topk::RowLists;

/// Largest k the index builds.
pub const MAX_K: usize = 100;
/// Default tile edge: a 512 × 512 f32 score tile (1 MiB) stays in L2 cache
/// while it is scanned, and faer runs near its peak on this shape.
pub const DEFAULT_TILE_ROWS: usize = 512;

/// How to build the table.
#[derive(Debug, Clone)]
pub struct IndexParams {
    /// Neighbours per track (1..=MAX_K).
    pub k: usize,
    /// Rows per tile. Every task of one job must use the same value, since
    /// block boundaries follow tile boundaries.
    pub tile_rows: usize,
    /// Worker threads.
    pub threads: usize,
    /// Pairs scoring at least this are listed as near-duplicates.
    pub near_duplicate_threshold: Option<f32>,
}

/// Default near-duplicate threshold: the same recording sold twice embeds
/// to nearly the same vector, while different tracks of one style do not.
pub const DEFAULT_NEAR_DUPLICATE_THRESHOLD: f32 = 0.995;

impl IndexParams {
    pub fn new(k: usize) -> Self {
        Self {
            k,
            tile_rows: DEFAULT_TILE_ROWS,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            near_duplicate_threshold: Some(DEFAULT_NEAR_DUPLICATE_THRESHOLD),
        }
    }
}

/// The row tiles of a matrix.
#[derive(Debug, Clone, Copy)]
pub struct Tiling {
    rows: usize,
    tile_rows: usize,
}

impl Tiling {
    pub fn new(rows: usize, tile_rows: usize) -> Self {
        Self {
            rows,
            tile_rows: tile_rows.max(1),
        }
    }

    pub fn count(&self) -> usize {
        self.rows.div_ceil(self.tile_rows)
    }

    pub fn rows_of(&self, tile: usize) -> Range<usize> {
        let start = tile * self.tile_rows;
        start..(start + self.tile_rows).min(self.rows)
    }

    /// Tiles of block `block` of `block_count`: contiguous and as even as
    /// possible. A block may be empty when there are more blocks than tiles.
    pub fn tiles_of_block(&self, block: usize, block_count: usize) -> Range<usize> {
        let tiles = self.count();
        (block * tiles / block_count)..((block + 1) * tiles / block_count)
    }

    /// Rows of block `block` of `block_count`.
    pub fn rows_of_block(&self, block: usize, block_count: usize) -> Range<usize> {
        let tiles = self.tiles_of_block(block, block_count);
        if tiles.is_empty() {
            let start = self.rows.min(tiles.start * self.tile_rows);
            return start..start;
        }
        self.rows_of(tiles.start).start..self.rows_of(tiles.end - 1).end
    }
}

/// Neighbours per row: k, or every other track when there are fewer.
pub fn effective_k(rows: usize, k: usize) -> usize {
    k.min(rows.saturating_sub(1))
}

fn check(matrix: &EmbeddingMatrix, params: &IndexParams) -> Result<(), IndexError> {
    if params.k == 0 || params.k > MAX_K {
        return Err(IndexError::BadK {
            k: params.k,
            max: MAX_K,
        });
    }
    if matrix.rows() < 2 {
        return Err(IndexError::TooFewTracks {
            rows: matrix.rows(),
        });
    }
    Ok(())
}

/// Progress callback: called with the number of tile pairs just finished.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Tile pairs the single-process path computes (I ≤ J).
pub fn full_table_pairs(rows: usize, tile_rows: usize) -> u64 {
    let t = Tiling::new(rows, tile_rows).count() as u64;
    t * (t + 1) / 2
}

/// Tile pairs a block task computes (its tiles against every tile).
pub fn block_pairs(rows: usize, tile_rows: usize, block: usize, block_count: usize) -> u64 {
    let tiling = Tiling::new(rows, tile_rows);
    (tiling.tiles_of_block(block, block_count).len() * tiling.count()) as u64
}

/// The exact top-k table of every row, using the symmetry of the scores.
pub fn full_table(
    matrix: &EmbeddingMatrix,
    params: &IndexParams,
    kernel: &dyn ScoreKernel,
    progress: Progress<'_>,
) -> Result<NeighbourTable, IndexError> {
    check(matrix, params)?;
    let tiling = Tiling::new(matrix.rows(), params.tile_rows);
    let k = effective_k(matrix.rows(), params.k);
    let lists: Vec<Mutex<RowLists>> = (0..tiling.count())
        .map(|t| {
            Mutex::new(RowLists::new(
                tiling.rows_of(t).len(),
                k,
                duplicate_gate(params),
            ))
        })
        .collect();
    let next_tile = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..params.threads.max(1) {
            scope.spawn(|| {
                let mut scores = vec![0f32; params.tile_rows * params.tile_rows];
                loop {
                    let i = next_tile.fetch_add(1, Ordering::Relaxed);
                    if i >= tiling.count() {
                        break;
                    }
                    for j in i..tiling.count() {
                        let (rows, cols) = (tiling.rows_of(i), tiling.rows_of(j));
                        let tile = &mut scores[..rows.len() * cols.len()];
                        product(matrix, kernel, rows.clone(), cols.clone(), tile);
                        let origin = TileOrigin {
                            row_global: rows.start as u32,
                            col_global: cols.start as u32,
                        };
                        // Lock order: lower tile first, so two threads never wait on each other.
                        let mut row_lists = lock(&lists[i]);
                        if i == j {
                            let side = Side {
                                lists: &mut row_lists,
                                local_start: 0,
                            };
                            scan_tile(tile, rows.len(), cols.len(), origin, Some(side), None);
                        } else {
                            let mut col_lists = lock(&lists[j]);
                            let row_side = Side {
                                lists: &mut row_lists,
                                local_start: 0,
                            };
                            let col_side = Side {
                                lists: &mut col_lists,
                                local_start: 0,
                            };
                            scan_tile(
                                tile,
                                rows.len(),
                                cols.len(),
                                origin,
                                Some(row_side),
                                Some(col_side),
                            );
                        }
                    }
                    progress((tiling.count() - i) as u64);
                }
            });
        }
    });
    let lists: Vec<RowLists> = lists.into_iter().map(into_inner).collect();
    Ok(NeighbourTable::from_lists(0, k, &lists))
}

/// The exact top-k table of the rows of block `block` of `block_count`,
/// against every row. Concatenating the blocks gives `full_table` exactly.
pub fn block_table(
    matrix: &EmbeddingMatrix,
    params: &IndexParams,
    block: usize,
    block_count: usize,
    kernel: &dyn ScoreKernel,
    progress: Progress<'_>,
) -> Result<NeighbourTable, IndexError> {
    check(matrix, params)?;
    if block_count == 0 {
        return Err(IndexError::ZeroBlocks);
    }
    if block >= block_count {
        return Err(IndexError::BadBlock { block, block_count });
    }
    let tiling = Tiling::new(matrix.rows(), params.tile_rows);
    let k = effective_k(matrix.rows(), params.k);
    let own_tiles = tiling.tiles_of_block(block, block_count);
    let lists: Vec<Mutex<RowLists>> = own_tiles
        .clone()
        .map(|t| {
            Mutex::new(RowLists::new(
                tiling.rows_of(t).len(),
                k,
                duplicate_gate(params),
            ))
        })
        .collect();
    let pairs = own_tiles.len() * tiling.count();
    let next_pair = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..params.threads.max(1) {
            scope.spawn(|| {
                let mut scores = vec![0f32; params.tile_rows * params.tile_rows];
                loop {
                    let pair = next_pair.fetch_add(1, Ordering::Relaxed);
                    if pair >= pairs {
                        break;
                    }
                    let own = pair / tiling.count();
                    let i = own_tiles.start + own;
                    let j = pair % tiling.count();
                    // Always the product (min, max), as the full path computes it.
                    let (lo, hi) = (i.min(j), i.max(j));
                    let (rows, cols) = (tiling.rows_of(lo), tiling.rows_of(hi));
                    let tile = &mut scores[..rows.len() * cols.len()];
                    product(matrix, kernel, rows.clone(), cols.clone(), tile);
                    let origin = TileOrigin {
                        row_global: rows.start as u32,
                        col_global: cols.start as u32,
                    };
                    let mut own_lists = lock(&lists[own]);
                    let side = Side {
                        lists: &mut own_lists,
                        local_start: 0,
                    };
                    if i <= j {
                        scan_tile(tile, rows.len(), cols.len(), origin, Some(side), None);
                    } else {
                        scan_tile(tile, rows.len(), cols.len(), origin, None, Some(side));
                    }
                    drop(own_lists);
                    progress(1);
                }
            });
        }
    });
    let lists: Vec<RowLists> = lists.into_iter().map(into_inner).collect();
    let start = tiling.rows_of_block(block, block_count).start;
    Ok(NeighbourTable::from_lists(start, k, &lists))
}

fn duplicate_gate(params: &IndexParams) -> f32 {
    params.near_duplicate_threshold.unwrap_or(f32::INFINITY)
}

fn product(
    matrix: &EmbeddingMatrix,
    kernel: &dyn ScoreKernel,
    rows: Range<usize>,
    cols: Range<usize>,
    out: &mut [f32],
) {
    kernel.product(
        matrix.rows_slice(rows),
        matrix.rows_slice(cols),
        matrix.dim(),
        out,
    );
}

// A poisoned lock means a scan panicked; the lists are then unusable anyway.
fn lock(lists: &Mutex<RowLists>) -> std::sync::MutexGuard<'_, RowLists> {
    lists.lock().unwrap_or_else(|e| e.into_inner())
}

fn into_inner(lists: Mutex<RowLists>) -> RowLists {
    lists.into_inner().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_tiles_contiguously() {
        let tiling = Tiling::new(1000, 64);
        assert_eq!(tiling.count(), 16);
        for block_count in [1, 3, 5, 16, 20] {
            let mut next_row = 0;
            for b in 0..block_count {
                let rows = tiling.rows_of_block(b, block_count);
                assert_eq!(rows.start, next_row);
                next_row = rows.end;
            }
            assert_eq!(next_row, 1000);
        }
    }
}
