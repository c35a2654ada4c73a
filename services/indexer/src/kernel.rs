//! The block product behind the index: scores of a tile of rows against
//! another tile. A trait, so that a GPU product can replace the CPU one.

use faer::{Accum, MatMut, MatRef, Par};

/// Computes `out = lhs · rhsᵀ` for row-major `lhs` (m × dim) and `rhs`
/// (n × dim) into row-major `out` (m × n).
///
/// Implementations must be deterministic: the same call gives the same
/// bits, because the sharded and single-process paths rely on it to produce
/// identical tables.
pub trait ScoreKernel: Send + Sync {
    fn product(&self, lhs: &[f32], rhs: &[f32], dim: usize, out: &mut [f32]);
}

/// faer's SIMD matrix product (AVX-512 or AVX2, chosen at run time), run on
/// the calling thread; the index spreads tiles over threads itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuKernel;

impl ScoreKernel for CpuKernel {
    fn product(&self, lhs: &[f32], rhs: &[f32], dim: usize, out: &mut [f32]) {
        let m = lhs.len() / dim;
        let n = rhs.len() / dim;
        assert_eq!(out.len(), m * n, "score tile has the wrong size");
        let lhs = MatRef::from_row_major_slice(lhs, m, dim);
        let rhs = MatRef::from_row_major_slice(rhs, n, dim);
        let out = MatMut::from_row_major_slice_mut(out, m, n);
        faer::linalg::matmul::matmul(out, Accum::Replace, lhs, rhs.transpose(), 1.0f32, Par::Seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_matches_dot_products() {
        let dim = 5;
        let lhs: Vec<f32> = (0..3 * dim).map(|i| (i as f32 * 0.37).sin()).collect();
        let rhs: Vec<f32> = (0..4 * dim).map(|i| (i as f32 * 0.91).cos()).collect();
        let mut out = vec![0.0; 12];
        CpuKernel.product(&lhs, &rhs, dim, &mut out);
        for r in 0..3 {
            for c in 0..4 {
                let dot: f32 = (0..dim).map(|d| lhs[r * dim + d] * rhs[c * dim + d]).sum();
                assert!((out[r * 4 + c] - dot).abs() < 1e-5);
            }
        }
    }
}
