//! Scanning a score tile into top-k lists.
//!
//! Nearly every score is below both its row's and its column's k-th best, so
//! the scan is a SIMD comparison of 16 (AVX-512) or 8 (AVX2) scores against
//! the row threshold and the column thresholds at once; only the rare lanes
//! that pass go to the sorted-list insertion. The row side's gate is also
//! lowered to the near-duplicate threshold, if that is lower.

use crate::topk::RowLists;

/// The lists a tile's rows or columns feed, and where the tile starts in them.
pub struct Side<'a> {
    pub lists: &'a mut RowLists,
    /// Local row in `lists` of the tile's first row (or column).
    pub local_start: usize,
}

/// Where a tile sits in the global row numbering.
#[derive(Debug, Clone, Copy)]
pub struct TileOrigin {
    /// Global row of the tile's first row.
    pub row_global: u32,
    /// Global row of the tile's first column.
    pub col_global: u32,
}

/// Feeds a row-major `rows × cols` score tile to the row side (each tile row
/// learns about the column tracks) and/or the column side (each tile column
/// learns about the row tracks). A score of a track with itself is skipped.
pub fn scan_tile(
    tile: &[f32],
    rows: usize,
    cols: usize,
    origin: TileOrigin,
    mut row_side: Option<Side<'_>>,
    mut col_side: Option<Side<'_>>,
) {
    assert_eq!(tile.len(), rows * cols, "score tile has the wrong size");
    if let Some(side) = &row_side {
        assert!(side.local_start + rows <= side.lists.rows());
    }
    if let Some(side) = &col_side {
        assert!(side.local_start + cols <= side.lists.rows());
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected at run time, and the bounds of
            // every pointer read were checked above.
            unsafe { x86::scan_avx512(tile, rows, cols, origin, &mut row_side, &mut col_side) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            unsafe { x86::scan_avx2(tile, rows, cols, origin, &mut row_side, &mut col_side) };
            return;
        }
    }
    scan_scalar(tile, rows, cols, origin, &mut row_side, &mut col_side, 0);
}

/// Scalar scan of columns `from..cols`; the fallback and the SIMD tails.
fn scan_scalar(
    tile: &[f32],
    rows: usize,
    cols: usize,
    origin: TileOrigin,
    row_side: &mut Option<Side<'_>>,
    col_side: &mut Option<Side<'_>>,
    from: usize,
) {
    for r in 0..rows {
        let line = &tile[r * cols..(r + 1) * cols];
        for (c, &score) in line.iter().enumerate().skip(from) {
            offer_lane(score, r, c, origin, row_side, col_side);
        }
    }
}

/// The slow path for one score that passed (or may pass) a threshold.
#[inline]
fn offer_lane(
    score: f32,
    r: usize,
    c: usize,
    origin: TileOrigin,
    row_side: &mut Option<Side<'_>>,
    col_side: &mut Option<Side<'_>>,
) {
    let row_id = origin.row_global + r as u32;
    let col_id = origin.col_global + c as u32;
    if row_id == col_id {
        return;
    }
    if let Some(side) = row_side {
        let local = side.local_start + r;
        if score >= side.lists.thresholds()[local] {
            side.lists.offer(local, score, col_id);
        }
        // Each near-duplicate pair is recorded once, from its lower row.
        if col_id > row_id && score >= side.lists.duplicate_threshold() {
            side.lists.offer_duplicate(local, score, col_id);
        }
    }
    if let Some(side) = col_side {
        let local = side.local_start + c;
        if score >= side.lists.thresholds()[local] {
            side.lists.offer(local, score, row_id);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{offer_lane, scan_scalar, Side, TileOrigin};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scan_avx512(
        tile: &[f32],
        rows: usize,
        cols: usize,
        origin: TileOrigin,
        row_side: &mut Option<Side<'_>>,
        col_side: &mut Option<Side<'_>>,
    ) {
        const LANES: usize = 16;
        let body = cols - cols % LANES;
        for r in 0..rows {
            let line = tile.as_ptr().add(r * cols);
            let row_threshold = |side: &Option<Side<'_>>| match side {
                Some(s) => s.lists.row_gate(s.local_start + r),
                None => f32::INFINITY,
            };
            let mut row_limit = _mm512_set1_ps(row_threshold(row_side));
            let mut c = 0;
            while c < body {
                let scores = _mm512_loadu_ps(line.add(c));
                let mut mask = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(scores, row_limit);
                if let Some(side) = col_side {
                    let limits = side.lists.thresholds().as_ptr().add(side.local_start + c);
                    mask |= _mm512_cmp_ps_mask::<_CMP_GE_OQ>(scores, _mm512_loadu_ps(limits));
                }
                if mask != 0 {
                    while mask != 0 {
                        let lane = mask.trailing_zeros() as usize;
                        mask &= mask - 1;
                        offer_lane(*line.add(c + lane), r, c + lane, origin, row_side, col_side);
                    }
                    row_limit = _mm512_set1_ps(row_threshold(row_side));
                }
                c += LANES;
            }
        }
        if body < cols {
            scan_scalar(tile, rows, cols, origin, row_side, col_side, body);
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn scan_avx2(
        tile: &[f32],
        rows: usize,
        cols: usize,
        origin: TileOrigin,
        row_side: &mut Option<Side<'_>>,
        col_side: &mut Option<Side<'_>>,
    ) {
        const LANES: usize = 8;
        let body = cols - cols % LANES;
        for r in 0..rows {
            let line = tile.as_ptr().add(r * cols);
            let row_threshold = |side: &Option<Side<'_>>| match side {
                Some(s) => s.lists.row_gate(s.local_start + r),
                None => f32::INFINITY,
            };
            let mut row_limit = _mm256_set1_ps(row_threshold(row_side));
            let mut c = 0;
            while c < body {
                let scores = _mm256_loadu_ps(line.add(c));
                let mut pass = _mm256_cmp_ps::<_CMP_GE_OQ>(scores, row_limit);
                if let Some(side) = col_side {
                    let limits = side.lists.thresholds().as_ptr().add(side.local_start + c);
                    pass = _mm256_or_ps(
                        pass,
                        _mm256_cmp_ps::<_CMP_GE_OQ>(scores, _mm256_loadu_ps(limits)),
                    );
                }
                let mut mask = _mm256_movemask_ps(pass) as u32;
                if mask != 0 {
                    while mask != 0 {
                        let lane = mask.trailing_zeros() as usize;
                        mask &= mask - 1;
                        offer_lane(*line.add(c + lane), r, c + lane, origin, row_side, col_side);
                    }
                    row_limit = _mm256_set1_ps(row_threshold(row_side));
                }
                c += LANES;
            }
        }
        if body < cols {
            scan_scalar(tile, rows, cols, origin, row_side, col_side, body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SIMD scan and the scalar scan agree on a tile whose width has a tail.
    #[test]
    fn simd_and_scalar_scans_agree() {
        let (rows, cols, k) = (7, 37, 4);
        let tile: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1009) as f32 / 1009.0) - 0.5)
            .collect();
        let origin = TileOrigin {
            row_global: 100,
            col_global: 200,
        };
        let run = |simd: bool| {
            let mut row_lists = RowLists::new(rows, k, 0.3);
            let mut col_lists = RowLists::new(cols, k, 0.3);
            let row_side = Some(Side {
                lists: &mut row_lists,
                local_start: 0,
            });
            let col_side = Some(Side {
                lists: &mut col_lists,
                local_start: 0,
            });
            if simd {
                scan_tile(&tile, rows, cols, origin, row_side, col_side);
            } else {
                let (mut a, mut b) = (row_side, col_side);
                scan_scalar(&tile, rows, cols, origin, &mut a, &mut b, 0);
            }
            let rows_out: Vec<_> = (0..rows).map(|r| row_lists.list(r).0.to_vec()).collect();
            let cols_out: Vec<_> = (0..cols).map(|c| col_lists.list(c).0.to_vec()).collect();
            let dups: Vec<_> = (0..rows).map(|r| row_lists.duplicates(r)).collect();
            assert!(dups.iter().any(|d| !d.is_empty()));
            (rows_out, cols_out, dups)
        };
        let (simd_rows, simd_cols, simd_dups) = run(true);
        let (scalar_rows, scalar_cols, scalar_dups) = run(false);
        assert_eq!(simd_rows, scalar_rows);
        assert_eq!(simd_cols, scalar_cols);
        assert_eq!(simd_dups, scalar_dups);
        assert!(simd_rows.iter().all(|l| l.len() == k));
        assert!(simd_cols.iter().all(|l| l.len() == 4));
    }

    #[test]
    fn self_scores_are_skipped() {
        let tile = vec![1.0, 0.5, 0.5, 1.0];
        let mut lists = RowLists::new(2, 1, f32::INFINITY);
        let origin = TileOrigin {
            row_global: 0,
            col_global: 0,
        };
        let side = Some(Side {
            lists: &mut lists,
            local_start: 0,
        });
        scan_tile(&tile, 2, 2, origin, side, None);
        assert_eq!(lists.list(0).0, &[1]);
        assert_eq!(lists.list(1).0, &[0]);
    }
}
