//! A small synthetic catalogue with WAV previews, served on loopback: the
//! fixture of the headless browser test (tests/browser). It writes a real
//! store (catalogue and neighbour Parquet, preview files), loads it the way
//! `deepcuts serve` does, and prints `listening http://ADDR` once ready.
//!
//! cargo run -p deepcuts-server --example fixture_server -- --dir DIR

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use arrow_array::builder::{Float32Builder, ListBuilder, StringBuilder};
use arrow_array::{Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use clap::Parser;
use deepcuts_core::keys;
use deepcuts_core::parquet_io::write_batches;
use deepcuts_core::storage::{LocalStore, ObjectStore};
use deepcuts_server::{AppState, Library, NoSpectrograms};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Where to write the store and previews.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
}

const JOB: &str = "fixture";
const MODEL: &str = "synthetic";
const K: usize = 8;

struct FixtureTrack {
    id: String,
    artist: &'static str,
    release: &'static str,
    catalogue_number: &'static str,
    name: String,
    genre: &'static str,
    /// Base pitch of the preview and the source of its synthetic embedding.
    hz: f64,
}

fn catalogue() -> Vec<FixtureTrack> {
    let releases = [
        (
            "Clear View",
            "Tell Me",
            "SB 215-0",
            "Progressive House",
            220.0,
        ),
        (
            "Clear View",
            "Night Lines",
            "SB 230-1",
            "Progressive House",
            233.0,
        ),
        ("Dub Assembly", "Low Freq", "DA 001", "Dub Techno", 110.0),
        ("Mina Rios", "Breaks Season", "MR 12", "Breakbeat", 330.0),
        ("Kojo Banks", "Sound System", "KB 7", "Dancehall", 392.0),
    ];
    let mut tracks = Vec::new();
    for (r, (artist, release, catalogue_number, genre, hz)) in releases.into_iter().enumerate() {
        for t in 0..3 {
            let name = if t == 0 {
                release.to_owned()
            } else {
                format!("{release} (mix {t})")
            };
            tracks.push(FixtureTrack {
                id: format!("T{:02}{:02}", r + 1, t + 1),
                artist,
                release,
                catalogue_number,
                name,
                genre,
                hz: hz * (1.0 + 0.02 * t as f64),
            });
        }
    }
    tracks
}

/// One second of a mono 16-bit sine tone as a WAV file.
fn wav(hz: f64) -> Vec<u8> {
    let rate = 8_000u32;
    let samples: Vec<i16> = (0..rate)
        .map(|i| ((i as f64 * hz * std::f64::consts::TAU / rate as f64).sin() * 8_000.0) as i16)
        .collect();
    let data_len = samples.len() as u32 * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// A synthetic embedding: a bump around the track's pitch on a log scale.
fn embedding(hz: f64) -> Vec<f64> {
    let centre = (hz / 100.0).log2() * 8.0;
    let v: Vec<f64> = (0..32)
        .map(|i| (-((i as f64 - centre).powi(2)) / 18.0).exp())
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn preview_url(path: &Path) -> anyhow::Result<String> {
    Ok(url::Url::from_file_path(path)
        .map_err(|()| anyhow::anyhow!("not an absolute path: {}", path.display()))?
        .to_string())
}

async fn write_fixture(dir: &Path, tracks: &[FixtureTrack]) -> anyhow::Result<()> {
    let previews = dir.join("previews");
    std::fs::create_dir_all(&previews)?;
    let store = LocalStore::new(dir.join("store"))?;
    let mut urls = Vec::new();
    for track in tracks {
        let path = previews.join(format!("{}.wav", track.id));
        std::fs::write(&path, wav(track.hz))?;
        urls.push(preview_url(&path)?);
    }
    let text = |f: &dyn Fn(&FixtureTrack) -> String| -> Arc<StringArray> {
        Arc::new(tracks.iter().map(|t| Some(f(t))).collect())
    };
    let schema = Arc::new(Schema::new(
        [
            "track_id",
            "artist",
            "release_title",
            "track_name",
            "label",
            "catalogue_number",
            "release_date",
            "genre",
            "preview_url",
            "page_url",
        ]
        .into_iter()
        .map(|n| Field::new(n, DataType::Utf8, true))
        .chain([Field::new("duration_s", DataType::Float64, true)])
        .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            text(&|t| t.id.clone()),
            text(&|t| t.artist.to_owned()),
            text(&|t| t.release.to_owned()),
            text(&|t| t.name.clone()),
            text(&|_| "Fixture Records".to_owned()),
            text(&|t| t.catalogue_number.to_owned()),
            text(&|_| "10 Sep 08".to_owned()),
            text(&|t| t.genre.to_owned()),
            Arc::new(
                urls.iter()
                    .map(|u| Some(u.as_str()))
                    .collect::<StringArray>(),
            ),
            text(&|t| format!("https://shop.invalid/products/{}", t.id)),
            Arc::new(Float64Array::from(vec![1.0; tracks.len()])),
        ],
    )?;
    write_batches(&store, &keys::catalogue_page(JOB, 1), &[batch]).await?;

    // The exact top-k of the synthetic embeddings, by brute force.
    let vectors: Vec<Vec<f64>> = tracks.iter().map(|t| embedding(t.hz)).collect();
    let mut ids = StringBuilder::new();
    let mut neighbours = ListBuilder::new(StringBuilder::new());
    let mut scores = ListBuilder::new(Float32Builder::new());
    for (q, track) in tracks.iter().enumerate() {
        let mut ranked: Vec<(usize, f64)> = (0..tracks.len())
            .filter(|&c| c != q)
            .map(|c| {
                (
                    c,
                    vectors[q].iter().zip(&vectors[c]).map(|(a, b)| a * b).sum(),
                )
            })
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ids.append_value(&track.id);
        for &(c, score) in ranked.iter().take(K) {
            neighbours.values().append_value(&tracks[c].id);
            scores.values().append_value(score as f32);
        }
        neighbours.append(true);
        scores.append(true);
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("track_id", DataType::Utf8, false),
        Field::new(
            "neighbour_ids",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
        Field::new(
            "scores",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            false,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(ids.finish()),
            Arc::new(neighbours.finish()),
            Arc::new(scores.finish()),
        ],
    )?;
    write_batches(&store, &keys::neighbours_block(JOB, MODEL, 0), &[batch]).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    let dir = args.dir.canonicalize()?;
    write_fixture(&dir, &catalogue())
        .await
        .context("writing the fixture")?;
    let store = LocalStore::new(dir.join("store"))?;
    let library = Library::load(&store as &dyn ObjectStore, JOB, None).await?;
    let state = AppState {
        library: Arc::new(library),
        spectrograms: Arc::new(NoSpectrograms),
    };
    let stop = CancellationToken::new();
    let (addr, server) = deepcuts_server::serve(state, &args.listen, stop.clone()).await?;
    println!("listening http://{addr}");
    // Runs until killed or until stdin closes (the test's pipe).
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        }) => {}
    }
    stop.cancel();
    server.await??;
    Ok(())
}
