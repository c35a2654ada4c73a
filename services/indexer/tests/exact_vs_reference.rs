//! The blocked, threaded, SIMD table against a brute-force f64 reference.

use deepcuts_indexer::{
    block_table, full_table, CpuKernel, EmbeddingMatrix, IndexParams, NeighbourTable,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    // Box–Muller; rand_distr is not worth a dependency here.
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

fn random_matrix(rows: usize, dim: usize, seed: u64) -> EmbeddingMatrix {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = (0..rows * dim).map(|_| gaussian(&mut rng)).collect();
    EmbeddingMatrix::from_raw(data, dim).unwrap()
}

/// Exact top-k of every row by f64 dot products: (ids, scores) per row.
fn brute_force(matrix: &EmbeddingMatrix, k: usize) -> Vec<Vec<(u32, f64)>> {
    (0..matrix.rows())
        .map(|q| {
            let mut all: Vec<(u32, f64)> = (0..matrix.rows())
                .filter(|&c| c != q)
                .map(|c| {
                    let dot = matrix
                        .row(q)
                        .iter()
                        .zip(matrix.row(c))
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    (c as u32, dot)
                })
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(k + 1);
            all
        })
        .collect()
}

fn params(k: usize, tile_rows: usize, threads: usize) -> IndexParams {
    IndexParams {
        k,
        tile_rows,
        threads,
        near_duplicate_threshold: Some(0.999),
    }
}

/// Every row has k neighbours, none is itself, and the list is sorted by
/// score with ties broken by the lower id.
fn assert_well_formed(table: &NeighbourTable, rows: usize, k: usize) {
    assert_eq!(table.rows(), rows);
    assert_eq!(table.k, k);
    for row in 0..rows {
        let (ids, scores) = table.row(row);
        assert_eq!(ids.len(), k);
        assert!(!ids.contains(&(row as u32)), "row {row} lists itself");
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), k, "row {row} lists a neighbour twice");
        for p in 1..k {
            assert!(
                scores[p - 1] > scores[p] || (scores[p - 1] == scores[p] && ids[p - 1] < ids[p]),
                "row {row} is out of order at {p}"
            );
        }
    }
}

#[test]
fn matches_brute_force_on_random_data() {
    let (rows, dim, k) = (1100, 24, 10);
    let matrix = random_matrix(rows, dim, 7);
    // Small tiles, so that rows span many tiles, with a ragged last tile.
    let table = full_table(&matrix, &params(k, 96, 2), &CpuKernel, &|_| {}).unwrap();
    assert_well_formed(&table, rows, k);
    let reference = brute_force(&matrix, k);
    // f32 products differ from f64 by ~1e-6; rows whose top k+1 scores are
    // all further apart than this must match id for id.
    let tolerance = 1e-5;
    let mut exact_rows = 0;
    for (row, truth) in reference.iter().enumerate() {
        let (ids, scores) = table.row(row);
        for (p, &(_, true_score)) in truth.iter().take(k).enumerate() {
            assert!(
                (f64::from(scores[p]) - true_score).abs() < tolerance,
                "row {row} rank {p}: score {} vs reference {true_score}",
                scores[p]
            );
        }
        let separated = truth.windows(2).all(|w| w[0].1 - w[1].1 > tolerance);
        if separated {
            let truth_ids: Vec<u32> = truth.iter().take(k).map(|&(id, _)| id).collect();
            assert_eq!(ids, &truth_ids[..], "row {row} neighbours differ");
            exact_rows += 1;
        }
    }
    assert!(
        exact_rows > rows * 9 / 10,
        "only {exact_rows} of {rows} rows were free of near-ties"
    );
}

#[test]
fn blocks_concatenate_to_the_full_table_exactly() {
    let (rows, dim, k) = (900, 16, 7);
    let matrix = random_matrix(rows, dim, 11);
    let params = params(k, 64, 2);
    let full = full_table(&matrix, &params, &CpuKernel, &|_| {}).unwrap();
    for block_count in [1, 4, 5, 20] {
        let blocks: Vec<NeighbourTable> = (0..block_count)
            .map(|b| block_table(&matrix, &params, b, block_count, &CpuKernel, &|_| {}).unwrap())
            .collect();
        let joined = NeighbourTable::concat(&blocks).unwrap();
        assert_eq!(joined, full, "{block_count} blocks differ from one table");
    }
}

#[test]
fn thread_count_does_not_change_the_table() {
    let matrix = random_matrix(700, 32, 3);
    let one = full_table(&matrix, &params(10, 128, 1), &CpuKernel, &|_| {}).unwrap();
    let three = full_table(&matrix, &params(10, 128, 3), &CpuKernel, &|_| {}).unwrap();
    assert_eq!(one, three);
}

#[test]
fn duplicates_tie_by_lower_id_and_are_found() {
    let dim = 8;
    let base = random_matrix(50, dim, 5);
    // Rows 10, 20 and 30 are exact copies of row 0.
    let mut data = base.as_slice().to_vec();
    for copy in [10, 20, 30] {
        let (src, dst) = (0..dim, copy * dim..(copy + 1) * dim);
        data.copy_within(src, dst.start);
    }
    let matrix = EmbeddingMatrix::from_raw(data, dim).unwrap();
    let table = full_table(&matrix, &params(5, 16, 2), &CpuKernel, &|_| {}).unwrap();
    assert_well_formed(&table, 50, 5);
    assert_eq!(&table.row(0).0[..3], &[10, 20, 30]);
    assert_eq!(&table.row(20).0[..3], &[0, 10, 30]);
    let pairs: Vec<(u32, u32)> = table
        .near_duplicates
        .iter()
        .map(|p| (p.first, p.second))
        .collect();
    assert_eq!(
        pairs,
        vec![(0, 10), (0, 20), (0, 30), (10, 20), (10, 30), (20, 30)]
    );
    // Blocks list the same pairs, each pair in one block only.
    let blocks: Vec<NeighbourTable> = (0..3)
        .map(|b| block_table(&matrix, &params(5, 16, 2), b, 3, &CpuKernel, &|_| {}).unwrap())
        .collect();
    assert_eq!(NeighbourTable::concat(&blocks).unwrap(), table);
}

#[test]
fn small_catalogues_get_every_other_track() {
    let matrix = random_matrix(4, 6, 9);
    let table = full_table(&matrix, &params(10, 512, 2), &CpuKernel, &|_| {}).unwrap();
    assert_well_formed(&table, 4, 3);
}

#[test]
fn bad_requests_are_typed_errors() {
    let matrix = random_matrix(10, 4, 1);
    let bad_k = full_table(&matrix, &params(0, 8, 1), &CpuKernel, &|_| {});
    assert!(matches!(
        bad_k,
        Err(deepcuts_indexer::IndexError::BadK { .. })
    ));
    let bad_block = block_table(&matrix, &params(3, 8, 1), 2, 2, &CpuKernel, &|_| {});
    assert!(matches!(
        bad_block,
        Err(deepcuts_indexer::IndexError::BadBlock { .. })
    ));
    let one = random_matrix(1, 4, 1);
    let too_few = full_table(&one, &params(3, 8, 1), &CpuKernel, &|_| {});
    assert!(matches!(
        too_few,
        Err(deepcuts_indexer::IndexError::TooFewTracks { rows: 1 })
    ));
}
