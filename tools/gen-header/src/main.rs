//! `cargo run --manifest-path tools/gen-header/Cargo.toml [-- --check]`: writes
//! include/goldcrest.h from the ffi crate, or with `--check` fails if the committed one differs.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let ffi = root.join("ffi");
    let header = root.join("include/goldcrest.h");
    let config = match cbindgen::Config::from_file(ffi.join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gen-header: ffi/cbindgen.toml: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bindings = match cbindgen::Builder::new()
        .with_crate(&ffi)
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("gen-header: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let current = std::fs::read(&header).unwrap_or_default();
    if check {
        if current == fresh {
            println!("include/goldcrest.h is up to date");
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "include/goldcrest.h is out of date: run `cargo run --manifest-path tools/gen-header/Cargo.toml` and commit it"
        );
        return ExitCode::FAILURE;
    }
    if let Err(e) =
        std::fs::create_dir_all(root.join("include")).and_then(|()| std::fs::write(&header, &fresh))
    {
        eprintln!("gen-header: writing {}: {e}", header.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {}", header.display());
    ExitCode::SUCCESS
}
