//! A deterministic synthetic music shop on loopback: the 2017 listing markup (and a
//! second template), genre-like MP3 previews synthesised per track, fault knobs, and a
//! request log that tests read.

pub mod catalogue;
pub mod render;
pub mod server;
pub mod synth;

pub use catalogue::{Catalogue, CatalogueConfig, Genre, PreviewFault, Release, Track};
pub use render::Template;
pub use server::{
    start, Faults, GroundTruth, RequestRecord, ShopConfig, ShopError, ShopHandle, TruthTrack,
};
