//! Minimal NumPy `.npy` reading and writing for 2-D little-endian arrays,
//! so that benchmarks and comparisons with Python tools share one file.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::error::IndexError;

const MAGIC: &[u8] = b"\x93NUMPY";

/// A 2-D f32 array read from a `.npy` file.
#[derive(Debug)]
pub struct NpyMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

fn npy_error(path: &Path, reason: impl Into<String>) -> IndexError {
    IndexError::Npy {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a C-ordered `<f4` 2-D array, converting in chunks so that the
/// file is never held twice in memory.
pub fn read_f32_matrix(path: &Path) -> Result<NpyMatrix, IndexError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut preamble = [0u8; 8];
    reader.read_exact(&mut preamble).map_err(io_error(path))?;
    if &preamble[..6] != MAGIC {
        return Err(npy_error(path, "not an npy file"));
    }
    let header_len = if preamble[6] == 1 {
        let mut len = [0u8; 2];
        reader.read_exact(&mut len).map_err(io_error(path))?;
        u16::from_le_bytes(len) as usize
    } else {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).map_err(io_error(path))?;
        u32::from_le_bytes(len) as usize
    };
    let mut header = vec![0u8; header_len];
    reader.read_exact(&mut header).map_err(io_error(path))?;
    let header = String::from_utf8_lossy(&header);
    if !header.contains("'descr': '<f4'") {
        return Err(npy_error(path, format!("expected '<f4' data: {header}")));
    }
    if !header.contains("'fortran_order': False") {
        return Err(npy_error(path, "expected C order"));
    }
    let (rows, cols) =
        parse_shape(&header).ok_or_else(|| npy_error(path, "expected a 2-D shape"))?;
    let mut data = Vec::with_capacity(rows * cols);
    let mut chunk = vec![0u8; 1 << 20];
    let mut remaining = rows * cols * 4;
    while remaining > 0 {
        let take = remaining.min(chunk.len());
        reader
            .read_exact(&mut chunk[..take])
            .map_err(io_error(path))?;
        data.extend(
            chunk[..take]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        remaining -= take;
    }
    Ok(NpyMatrix { rows, cols, data })
}

fn parse_shape(header: &str) -> Option<(usize, usize)> {
    let start = header.find("'shape': (")? + "'shape': (".len();
    let end = start + header[start..].find(')')?;
    let dims: Vec<usize> = header[start..end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    match dims[..] {
        [rows, cols] => Some((rows, cols)),
        _ => None,
    }
}

/// Element types this module writes.
pub trait NpyElement: Copy {
    const DESCR: &'static str;
    fn write_le(self, out: &mut Vec<u8>);
}

impl NpyElement for f32 {
    const DESCR: &'static str = "<f4";
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NpyElement for u32 {
    const DESCR: &'static str = "<u4";
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// Writes a C-ordered 2-D array (npy format version 1.0).
pub fn write_matrix<T: NpyElement>(
    path: &Path,
    rows: usize,
    cols: usize,
    data: &[T],
) -> Result<(), IndexError> {
    if data.len() != rows * cols {
        return Err(npy_error(path, "data length does not match the shape"));
    }
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}",
        T::DESCR
    );
    // Pad so that the data starts on a 64-byte boundary, ending in a newline.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let file = File::create(path).map_err(io_error(path))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let mut head = Vec::with_capacity(header.len() + 10);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&[1, 0]);
    head.extend_from_slice(&(header.len() as u16).to_le_bytes());
    head.extend_from_slice(header.as_bytes());
    writer.write_all(&head).map_err(io_error(path))?;
    let mut buf = Vec::with_capacity(1 << 20);
    for chunk in data.chunks(1 << 18) {
        buf.clear();
        for &v in chunk {
            v.write_le(&mut buf);
        }
        writer.write_all(&buf).map_err(io_error(path))?;
    }
    writer.flush().map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_matrix_round_trips() {
        let dir = std::env::temp_dir().join(format!("deepcuts-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        write_matrix(&path, 3, 4, &data).unwrap();
        let back = read_f32_matrix(&path).unwrap();
        assert_eq!((back.rows, back.cols), (3, 4));
        assert_eq!(back.data, data);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_other_files() {
        let dir = std::env::temp_dir().join(format!("deepcuts-npy-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.npy");
        std::fs::write(&path, b"hello world, not numpy").unwrap();
        assert!(matches!(
            read_f32_matrix(&path),
            Err(IndexError::Npy { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
