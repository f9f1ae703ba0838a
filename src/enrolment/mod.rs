//! Enrolment over HTTP: the CA service (`spheromesh ca serve`) and the node's side of it.
//!
//! The cryptography (requests, scopes, MACs, signing) is the mesh crate's
//! (`spheromesh_mesh::security`); this module only carries it over HTTP:
//! `POST /v1/enroll` with an [`EnrolRequest`](spheromesh_mesh::security::EnrolRequest) as
//! JSON answers an [`EnrolAnswer`](spheromesh_mesh::security::EnrolAnswer), or a JSON
//! `{"error", "message"}` with 400 (bad request), 401 (no accepted token matches),
//! 403 (name outside the token's scope), 413 (too large) or 503 (no tokens configured).

mod client;
mod server;

pub use client::{enrol, EnrolSettings};
pub use server::{serve, CaSettings, TokenSource};

/// The CA service's default port.
pub const DEFAULT_CA_PORT: u16 = 7900;
