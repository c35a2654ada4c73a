//! The embedding matrix: N row-major unit vectors of one dimension.

use crate::error::IndexError;

/// Row-major `rows × dim` matrix of unit-length f32 vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingMatrix {
    dim: usize,
    data: Vec<f32>,
}

impl EmbeddingMatrix {
    /// Takes raw vectors and scales each to unit length, so that the dot
    /// product is the cosine similarity. Rejects non-finite and zero rows.
    pub fn from_raw(data: Vec<f32>, dim: usize) -> Result<Self, IndexError> {
        let mut matrix = Self::unchecked(data, dim)?;
        for (row, vector) in matrix.data.chunks_exact_mut(dim).enumerate() {
            normalise_row(vector, row)?;
        }
        Ok(matrix)
    }

    /// Takes vectors that are already unit length (checked by the caller).
    pub fn from_unit_rows(data: Vec<f32>, dim: usize) -> Result<Self, IndexError> {
        Self::unchecked(data, dim)
    }

    fn unchecked(data: Vec<f32>, dim: usize) -> Result<Self, IndexError> {
        if dim == 0 {
            return Err(IndexError::ZeroDimension);
        }
        if !data.len().is_multiple_of(dim) {
            return Err(IndexError::RaggedData {
                len: data.len(),
                dim,
            });
        }
        let rows = data.len() / dim;
        if rows > u32::MAX as usize {
            return Err(IndexError::TooManyTracks { rows });
        }
        Ok(Self { dim, data })
    }

    pub fn rows(&self) -> usize {
        self.data.len() / self.dim
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// All rows, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    pub fn row(&self, row: usize) -> &[f32] {
        &self.data[row * self.dim..(row + 1) * self.dim]
    }

    /// Rows `range`, row-major.
    pub fn rows_slice(&self, range: std::ops::Range<usize>) -> &[f32] {
        &self.data[range.start * self.dim..range.end * self.dim]
    }
}

/// Scales one vector to unit length, accumulating the norm in f64 so that
/// the result does not depend on summation order.
pub fn normalise_row(vector: &mut [f32], row: usize) -> Result<(), IndexError> {
    if vector.iter().any(|v| !v.is_finite()) {
        return Err(IndexError::NonFinite { row });
    }
    let norm = vector
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Err(IndexError::ZeroVector { row });
    }
    for v in vector.iter_mut() {
        *v = (f64::from(*v) / norm) as f32;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_become_unit_length() {
        let m = EmbeddingMatrix::from_raw(vec![3.0, 4.0, 0.0, -2.0], 2).unwrap();
        assert_eq!(m.rows(), 2);
        assert_eq!(m.row(0), &[0.6, 0.8]);
        assert_eq!(m.row(1), &[0.0, -1.0]);
    }

    #[test]
    fn bad_rows_are_typed_errors() {
        assert!(matches!(
            EmbeddingMatrix::from_raw(vec![1.0, 0.0, 0.0, 0.0], 2),
            Err(IndexError::ZeroVector { row: 1 })
        ));
        assert!(matches!(
            EmbeddingMatrix::from_raw(vec![f32::NAN, 1.0], 2),
            Err(IndexError::NonFinite { row: 0 })
        ));
        assert!(matches!(
            EmbeddingMatrix::from_raw(vec![1.0; 5], 2),
            Err(IndexError::RaggedData { len: 5, dim: 2 })
        ));
        assert!(matches!(
            EmbeddingMatrix::from_raw(vec![], 0),
            Err(IndexError::ZeroDimension)
        ));
    }
}
