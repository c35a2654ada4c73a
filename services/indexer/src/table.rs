//! The neighbour table and its near-duplicate pairs.

use crate::topk::RowLists;

/// Top-k neighbours of a contiguous run of rows: `rows() × k` ids and
/// scores, each row sorted by score (highest first, ties by lower id).
#[derive(Debug, Clone, PartialEq)]
pub struct NeighbourTable {
    /// Global row of the first row.
    pub row_start: usize,
    pub k: usize,
    pub ids: Vec<u32>,
    pub scores: Vec<f32>,
    /// Near-duplicate pairs whose first track is one of these rows, sorted
    /// by first track, then best score. Each pair of the catalogue is in
    /// exactly one block.
    pub near_duplicates: Vec<NearDuplicate>,
}

impl NeighbourTable {
    pub(crate) fn from_lists(row_start: usize, k: usize, lists: &[RowLists]) -> Self {
        let rows: usize = lists.iter().map(RowLists::rows).sum();
        let mut ids = Vec::with_capacity(rows * k);
        let mut scores = Vec::with_capacity(rows * k);
        let mut near_duplicates = Vec::new();
        let mut first = row_start as u32;
        for tile in lists {
            for row in 0..tile.rows() {
                for (second, score) in tile.duplicates(row) {
                    near_duplicates.push(NearDuplicate {
                        first,
                        second,
                        score,
                    });
                }
                first += 1;
                let (row_ids, row_scores) = tile.list(row);
                // Every row sees every other row, so each list is full.
                assert_eq!(row_ids.len(), k, "a row's top-k list is short");
                ids.extend_from_slice(row_ids);
                scores.extend_from_slice(row_scores);
            }
        }
        Self {
            row_start,
            k,
            ids,
            scores,
            near_duplicates,
        }
    }

    pub fn rows(&self) -> usize {
        self.ids.len().checked_div(self.k).unwrap_or(0)
    }

    /// Neighbours of local row `row`: (ids, scores).
    pub fn row(&self, row: usize) -> (&[u32], &[f32]) {
        let span = row * self.k..(row + 1) * self.k;
        (&self.ids[span.clone()], &self.scores[span])
    }

    /// The rows `rows` (global rows, within this table) as a table of their own.
    pub fn slice(&self, rows: std::ops::Range<usize>) -> NeighbourTable {
        let local = rows.start - self.row_start..rows.end - self.row_start;
        let span = local.start * self.k..local.end * self.k;
        NeighbourTable {
            row_start: rows.start,
            k: self.k,
            ids: self.ids[span.clone()].to_vec(),
            scores: self.scores[span].to_vec(),
            near_duplicates: self
                .near_duplicates
                .iter()
                .filter(|p| rows.contains(&(p.first as usize)))
                .copied()
                .collect(),
        }
    }

    /// Concatenates consecutive blocks into one table.
    pub fn concat(blocks: &[NeighbourTable]) -> Option<NeighbourTable> {
        let first = blocks.first()?;
        let mut out = NeighbourTable {
            row_start: first.row_start,
            k: first.k,
            ids: Vec::new(),
            scores: Vec::new(),
            near_duplicates: Vec::new(),
        };
        for block in blocks {
            if block.k != out.k || block.row_start != out.row_start + out.rows() {
                return None;
            }
            out.ids.extend_from_slice(&block.ids);
            out.scores.extend_from_slice(&block.scores);
            out.near_duplicates
                .extend_from_slice(&block.near_duplicates);
        }
        Some(out)
    }
}

/// Two tracks whose embeddings are nearly the same: the same recording sold
/// twice, or a copy. `first < second` (global rows).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearDuplicate {
    pub first: u32,
    pub second: u32,
    pub score: f32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_needs_consecutive_blocks() {
        let block = |row_start| NeighbourTable {
            row_start,
            k: 1,
            ids: vec![9, 9],
            scores: vec![0.5, 0.5],
            near_duplicates: Vec::new(),
        };
        assert_eq!(
            NeighbourTable::concat(&[block(0), block(2)])
                .unwrap()
                .rows(),
            4
        );
        assert!(NeighbourTable::concat(&[block(0), block(3)]).is_none());
    }
}
