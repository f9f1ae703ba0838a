//! `spheromesh`: the command line of a spheromesh node.
//!
//! Today it segments images, trains and evaluates the model; the mesh
//! commands (`node`, `up`, `loadtest`) build on the same engine.

mod commands;

use std::process::ExitCode;

use clap::Parser;

/// The system allocator with transparent huge pages for buffers of 32 MB and more: the
/// original network's large activations (see `spheromesh_inference::HugePageAllocator`).
#[global_allocator]
static ALLOCATOR: spheromesh_inference::HugePageAllocator = spheromesh_inference::HugePageAllocator;

fn main() -> ExitCode {
    drop_empty_env_vars();
    spheromesh_inference::keep_freed_memory_for_reuse();
    let cli = commands::Cli::parse();
    spheromesh::logging::init(cli.log_format, &cli.instance_for_logs());
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Treats a variable set to the empty string as unset: compose files and shells often pass
/// `RABBITMQ_PORT=` for "no value", and clap would otherwise read it as the value "".
/// Runs first, before any thread exists.
fn drop_empty_env_vars() {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(_, value)| value.is_empty())
        .map(|(name, _)| name)
        .collect();
    for name in empty {
        std::env::remove_var(name);
    }
}
