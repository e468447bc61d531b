//! `rbdlc backup ...` (in progress).

use rbd_core::{Cluster, Result};

use crate::output::Out;

/// `rbdlc backup` subcommands.
#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Not implemented yet.
    #[command(hide = true)]
    Todo,
}

pub fn run(_cluster: &Cluster, _cmd: &Cmd, _out: &Out) -> Result<()> {
    Err(rbd_core::Error::new(rbd_core::ErrorKind::Unsupported, "rbdlc", "not implemented yet"))
}
