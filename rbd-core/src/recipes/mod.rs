//! OpenStack RBD recipes as typed, crash-safe operations, and the engine they share.
//!
//! Every recipe is a [`saga::Saga`]: ordered steps, each paired with its undo, with a failpoint
//! at every step boundary ([`failpoint`]).

pub mod failpoint;
pub mod flatten;
pub mod provenance;
pub mod saga;

// Recipe modules (filled in by the recipe work).
pub mod backup;
pub mod cinder;
pub mod glance;
pub mod groups;
mod hashing;
pub mod location;
pub mod nova;
pub mod placement;
pub mod reconcile;
pub mod throttle;
