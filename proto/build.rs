//! Generates the gRPC code and the file descriptor set (for server reflection)
//! with a vendored `protoc`, so a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; tonic-prost-build reads PROTOC.
    unsafe_env_set("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        "rackboot/v1/types.proto",
        "rackboot/v1/admin.proto",
        "rackboot/v1/agent.proto",
        "rackboot/v1/raft.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    // Without the `grpc` feature only the messages are generated: the crate
    // then depends on prost alone.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_server(grpc)
        .build_client(grpc)
        .file_descriptor_set_path(out.join("rackboot_descriptor.bin"))
        .compile_protos(&files, &["."])?;
    Ok(())
}

#[allow(unsafe_code)]
fn unsafe_env_set(key: &str, value: std::path::PathBuf) {
    // SAFETY: the build script has no other threads running.
    unsafe { std::env::set_var(key, value) }
}
