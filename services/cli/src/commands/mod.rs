//! One file per subcommand.

pub mod crawl;
pub mod demo;
pub mod doctor;
pub mod serve;
pub mod similar;
pub mod store;
