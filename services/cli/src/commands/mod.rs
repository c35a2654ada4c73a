//! One file per subcommand.

pub mod baseline;
pub mod crawl;
pub mod demo;
pub mod doctor;
pub mod job;
pub mod serve;
pub mod similar;
pub mod spectrogram;
pub mod store;
pub mod train;
