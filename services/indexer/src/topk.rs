//! Per-row top-k lists with a threshold for the fast rejection test.
//!
//! Order is total: a higher score first, and at equal scores the lower row
//! index (the lower track id, since rows are sorted by id) first. The top-k
//! set is therefore the same whatever order candidates arrive in.

/// Top-k lists of a contiguous range of rows.
#[derive(Debug, Clone)]
pub struct RowLists {
    k: usize,
    /// Score a candidate must reach (`>=`) to be looked at: the k-th score
    /// once the list is full, minus infinity before.
    thresholds: Vec<f32>,
    scores: Vec<f32>,
    ids: Vec<u32>,
    lens: Vec<u32>,
    /// Near-duplicate gate; infinity when near-duplicates are not collected.
    duplicate_threshold: f32,
    /// Near-duplicates of each row with a higher row index, kept to the
    /// [`MAX_NEAR_DUPLICATES_PER_TRACK`] best.
    duplicates: Vec<Vec<(f32, u32)>>,
}

/// Near-duplicates kept per track, so that a catalogue of identical
/// vectors (e.g. silent previews) cannot grow the list quadratically.
pub const MAX_NEAR_DUPLICATES_PER_TRACK: usize = 32;

/// True when (score `a`, id `a_id`) ranks before (`b`, `b_id`).
#[inline]
pub fn ranks_before(a: f32, a_id: u32, b: f32, b_id: u32) -> bool {
    a > b || (a == b && a_id < b_id)
}

impl RowLists {
    /// Lists for `rows` rows; pairs scoring at least `duplicate_threshold`
    /// are also collected as near-duplicates (pass infinity for none).
    pub fn new(rows: usize, k: usize, duplicate_threshold: f32) -> Self {
        Self {
            k,
            thresholds: vec![f32::NEG_INFINITY; rows],
            scores: vec![0.0; rows * k],
            ids: vec![0; rows * k],
            lens: vec![0; rows],
            duplicate_threshold,
            duplicates: vec![Vec::new(); rows],
        }
    }

    pub fn duplicate_threshold(&self) -> f32 {
        self.duplicate_threshold
    }

    /// The score a candidate must reach to be looked at when this row meets
    /// a later track: the top-k threshold or the near-duplicate one.
    #[inline]
    pub fn row_gate(&self, row: usize) -> f32 {
        self.thresholds[row].min(self.duplicate_threshold)
    }

    /// Records a near-duplicate `id` (a higher row index) of local row `row`.
    #[inline(never)]
    pub fn offer_duplicate(&mut self, row: usize, score: f32, id: u32) {
        let list = &mut self.duplicates[row];
        list.push((score, id));
        // Keeping the best of a superset gives the same result in any
        // arrival order, because the order is total.
        if list.len() >= 2 * MAX_NEAR_DUPLICATES_PER_TRACK {
            sort_ranked(list);
            list.truncate(MAX_NEAR_DUPLICATES_PER_TRACK);
        }
    }

    /// Near-duplicates of local row `row`, best first: (id, score).
    pub fn duplicates(&self, row: usize) -> Vec<(u32, f32)> {
        let mut list = self.duplicates[row].clone();
        sort_ranked(&mut list);
        list.truncate(MAX_NEAR_DUPLICATES_PER_TRACK);
        list.into_iter().map(|(score, id)| (id, score)).collect()
    }

    pub fn rows(&self) -> usize {
        self.lens.len()
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Thresholds for the fast test; a score below a row's threshold can
    /// never enter its list.
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    /// Offers candidate `id` with `score` to local row `row`.
    #[inline(never)]
    pub fn offer(&mut self, row: usize, score: f32, id: u32) {
        let k = self.k;
        let len = self.lens[row] as usize;
        let scores = &mut self.scores[row * k..row * k + k];
        let ids = &mut self.ids[row * k..row * k + k];
        if len == k && !ranks_before(score, id, scores[k - 1], ids[k - 1]) {
            return;
        }
        // Insertion into a short sorted array: shift worse entries down.
        let mut pos = len.min(k - 1);
        while pos > 0 && ranks_before(score, id, scores[pos - 1], ids[pos - 1]) {
            scores[pos] = scores[pos - 1];
            ids[pos] = ids[pos - 1];
            pos -= 1;
        }
        scores[pos] = score;
        ids[pos] = id;
        if len < k {
            self.lens[row] += 1;
        }
        if self.lens[row] as usize == k {
            self.thresholds[row] = scores[k - 1];
        }
    }

    /// The sorted list of local row `row`: (ids, scores).
    pub fn list(&self, row: usize) -> (&[u32], &[f32]) {
        let len = self.lens[row] as usize;
        let start = row * self.k;
        (
            &self.ids[start..start + len],
            &self.scores[start..start + len],
        )
    }

    pub fn len(&self, row: usize) -> usize {
        self.lens[row] as usize
    }
}

fn sort_ranked(list: &mut [(f32, u32)]) {
    list.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_k_in_order_with_ties_by_id() {
        let mut lists = RowLists::new(1, 3, f32::INFINITY);
        for (score, id) in [(0.5, 7), (0.9, 3), (0.5, 2), (0.1, 1), (0.5, 9), (0.95, 8)] {
            lists.offer(0, score, id);
        }
        let (ids, scores) = lists.list(0);
        assert_eq!(ids, &[8, 3, 2]);
        assert_eq!(scores, &[0.95, 0.9, 0.5]);
        assert_eq!(lists.thresholds()[0], 0.5);
    }

    #[test]
    fn order_of_offers_does_not_matter() {
        let candidates: Vec<(f32, u32)> = (0..50u32)
            .map(|i| (((i * 37) % 11) as f32 / 10.0, i))
            .collect();
        let mut forward = RowLists::new(1, 5, f32::INFINITY);
        let mut backward = RowLists::new(1, 5, f32::INFINITY);
        for &(s, id) in &candidates {
            forward.offer(0, s, id);
        }
        for &(s, id) in candidates.iter().rev() {
            backward.offer(0, s, id);
        }
        assert_eq!(forward.list(0), backward.list(0));
        assert_eq!(forward.len(0), 5);
    }

    #[test]
    fn duplicates_keep_the_best_whatever_the_order() {
        let mut forward = RowLists::new(1, 1, 0.5);
        let mut backward = RowLists::new(1, 1, 0.5);
        let n = 5 * MAX_NEAR_DUPLICATES_PER_TRACK as u32;
        for id in 0..n {
            forward.offer_duplicate(0, 0.5 + (id % 7) as f32 / 100.0, id);
            backward.offer_duplicate(0, 0.5 + ((n - 1 - id) % 7) as f32 / 100.0, n - 1 - id);
        }
        let kept = forward.duplicates(0);
        assert_eq!(kept, backward.duplicates(0));
        assert_eq!(kept.len(), MAX_NEAR_DUPLICATES_PER_TRACK);
        assert_eq!(kept[0].0, 6);
    }
}
