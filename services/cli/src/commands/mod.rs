//! One file per subcommand.

pub mod doctor;
pub mod store;
