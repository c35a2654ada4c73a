//! deepcuts server: "sounds like this" queries over a job's neighbour table.
//!
//! [`library`] loads a job's catalogue and neighbour table into memory and
//! answers searches and similarity queries (used by `deepcuts similar`);
//! [`http`] serves them as a JSON API plus the listening page (used by
//! `deepcuts serve`).

pub mod http;
pub mod library;

pub use http::{router, serve, AppState, NoSpectrograms, SpectrogramSource};
pub use library::{Library, LibraryError, Neighbour, Track};
