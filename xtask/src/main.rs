//! `cargo xtask <command>`: the project's build entry points.
//!
//! - `setup`    install what the wasm build needs (Debian's rustc-web + std source) if absent
//! - `plugins`  build every adapter in plugins/ (or `-p NAME` only) into a component at
//!   target/plugins/<name>.wasm; `--path DIR`: the adapters of another workspace (an
//!   adapter's own repository), into DIR/target/plugins/
//! - `new-adapter NAME [--dir DIR]`  write a working adapter crate to start from (default
//!   ./NAME), outside this repository, depending on this SDK
//! - `test`     setup + plugins + every test (adapter unit tests, host, integration)
//! - `demo`     setup + plugins + host, then the end-to-end demo against CRM emulators; it
//!   keeps serving until Ctrl-C (`cargo xtask demo --once` exits after the walk-through)
//! - `bench`       setup + plugins + a release build, then the host-vs-native benchmark
//!   (BENCHMARKS.md; about 4 minutes after the build)
//! - `bench neighbours`  setup + plugins, then the noisy-neighbour benchmark (BENCHMARKS.md)
//! - `bench ab`    plugins + a release build, then this build and another side by side
//!   (`BENCH_AB`: the other host binary; `BENCH_AB_PLUGINS`: another plugins directory;
//!   `BENCH_AB_TENANTS`: how many tenants the calls go to)
//! - `fuzz [SECONDS]`    every fuzz target for SECONDS each (default 60)

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// The shadow stack adapters are linked with (wasm-ld's `-z stack-size`; Rust's default is
/// 1 MiB). Rust lays the stack out first in linear memory, below the data: a small one keeps
/// what a call dirties (stack top, data, the start of the heap) in a few contiguous pages
/// that the host's pooling allocator resets cheaply (BENCHMARKS.md). The SDK reads and
/// writes JSON without recursion, so at `opt-level = 3` the most deeply nested params the
/// host accepts fit in 32 KiB (`the_deepest_params_the_host_accepts_fit_an_adapters_stack`);
/// the deepest answer a CRM can send, which an adapter's own code drops (the compiler's drop
/// recurses), needs 48 (`the_deepest_answer_a_crm_can_send_fits_an_adapters_stack` fails
/// with 32). `CRM_ADAPTER_STACK` overrides it (bytes).
const ADAPTER_STACK: u32 = 48 << 10;
/// The initial linear memory adapters are linked with (wasm-ld's `--initial-memory`, a
/// multiple of 64 KiB): the stack, the data, and past them room for a call's heap, which the
/// SDK's allocator takes before it grows the memory. The host resets the first 128 KiB of a
/// pooled memory by hand (`KEEP_RESIDENT_MEMORY` in host/src/runtime/engine.rs: the stack,
/// the data and the bottom of the heap room, where a common call's arena stays) and
/// decommits the rest, so a common call costs no page fault and no memory growth, and a
/// larger one faults in pages instead of growing the memory. `CRM_ADAPTER_MEMORY` overrides
/// it (bytes), for an adapter whose stack and data do not fit (wasm-ld then says `initial
/// memory too small`). 192 KiB leave about 95 KiB of heap room past the bundled adapters'
/// 47 KiB of data, which every call of their conformance tests stays inside; at 128 KiB
/// (about 33 KiB of heap room) 2 of their 85 tests would grow it.
const ADAPTER_MEMORY: u32 = 192 << 10;
/// Debian's second Rust toolchain: ships std's source, so std can be built for wasm here
/// where rustup cannot download targets.
const DEBIAN_PACKAGES: &[&str] = &["rustc-web", "rust-web-src", "cargo-web", "lld"];
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust/library";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root();
    match args.first().map(String::as_str) {
        Some("setup") => setup().map(drop),
        Some("plugins") => plugins_cmd(&root, &args[1..]),
        Some("new-adapter") => new_adapter(&root, &args[1..]),
        Some("test") => test(&root, &args[1..]),
        Some("demo") => demo(&root, &args[1..]),
        Some("bench") => bench(&root, &args[1..]),
        Some("fuzz") => fuzz(&root, &args[1..]),
        Some("soak") => soak(&root, &args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <setup|plugins [--path DIR] [-p NAME]|new-adapter NAME [--dir DIR]|test|demo|bench [neighbours|ab]|fuzz [SECONDS]|soak [MINUTES] [RATE]>");
            std::process::exit(2);
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the repository root").to_path_buf()
}

/// How adapters get compiled to wasm on this machine.
enum Toolchain {
    /// rustup with the wasm32-unknown-unknown target installed (an ordinary machine).
    Rustup,
    /// Debian's rustc-web with -Zbuild-std (machines where rustup cannot fetch targets).
    Debian,
}

fn rustup_has_target() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == WASM_TARGET))
        .unwrap_or(false)
}

fn debian_ready() -> bool {
    Path::new(DEBIAN_RUSTC).exists()
        && Path::new(DEBIAN_CARGO).exists()
        && Path::new(DEBIAN_STD_SRC).exists()
        && which("wasm-ld")
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

fn setup() -> Result<Toolchain> {
    match std::env::var("CRM_WASM_TOOLCHAIN").as_deref() {
        Ok("rustup") => return Ok(Toolchain::Rustup),
        Ok("debian") => {}
        _ if rustup_has_target() => return Ok(Toolchain::Rustup),
        _ => {}
    }
    if debian_ready() {
        return Ok(Toolchain::Debian);
    }
    let root_user = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if !which("apt-get") || !root_user {
        bail!(
            "no way to build wasm: either `rustup target add {WASM_TARGET}`, or (Debian) as root \
             `apt-get install {}`",
            DEBIAN_PACKAGES.join(" ")
        );
    }
    eprintln!("xtask: installing {} (Debian's Rust toolchain with std source)", DEBIAN_PACKAGES.join(" "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(DEBIAN_PACKAGES)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if !debian_ready() {
        bail!("installed {} but {DEBIAN_RUSTC}, {DEBIAN_STD_SRC} or wasm-ld is still missing", DEBIAN_PACKAGES.join(" "));
    }
    Ok(Toolchain::Debian)
}

/// Builds every package of plugins/ that has `[package.metadata.crm-adapter]` and turns its
/// core module into a component at `target/plugins/<name>.wasm` (test-only ones, marked
/// `test-only = true`, at `target/plugins/testing/<name>.wasm`, so that deploying the
/// directory never deploys them). Returns the written paths.
fn plugins(root: &Path) -> Result<Vec<PathBuf>> {
    build_adapters(&root.join("plugins"), &root.join("target/plugins"), &[])
}

/// `cargo xtask plugins [--path DIR] [-p NAME]...`: NAME is an adapter's registry name or
/// package name; DIR a workspace (or crate) of adapters elsewhere.
fn plugins_cmd(root: &Path, args: &[String]) -> Result<()> {
    let mut only = Vec::new();
    let mut dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-p" | "--package" => only.push(it.next().context("-p needs an adapter name")?.clone()),
            "--path" => dir = Some(PathBuf::from(it.next().context("--path needs a directory")?)),
            other => bail!("unknown argument {other}: usage: cargo xtask plugins [--path DIR] [-p NAME]..."),
        }
    }
    match dir {
        None => build_adapters(&root.join("plugins"), &root.join("target/plugins"), &only).map(drop),
        Some(dir) => {
            let dir = std::path::absolute(&dir)?;
            build_adapters(&dir, &dir.join("target/plugins"), &only).map(drop)
        }
    }
}

/// `cargo xtask new-adapter NAME [--dir DIR]`: a crate of its own (its own workspace),
/// depending on this repository's SDK by path, with a JSON CRM mapping to start from, a
/// README, native unit tests and an end-to-end test against a loopback emulator;
/// `cargo xtask plugins --path DIR` builds it.
fn new_adapter(root: &Path, args: &[String]) -> Result<()> {
    let usage = "usage: cargo xtask new-adapter NAME [--dir DIR]";
    let name = args.first().filter(|n| !n.starts_with('-')).context(usage)?.clone();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        bail!("{name}: an adapter name is lowercase letters, digits and '-'");
    }
    let dir = match args.get(1).map(String::as_str) {
        Some("--dir") => PathBuf::from(args.get(2).context(usage)?),
        None => PathBuf::from(&name),
        Some(other) => bail!("unknown argument {other}: {usage}"),
    };
    let dir = std::path::absolute(&dir)?;
    if dir.join("Cargo.toml").exists() {
        bail!("{} already holds a crate", dir.display());
    }
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join("tests"))?;
    let ty: String = name.split('-').map(|w| w[..1].to_ascii_uppercase() + &w[1..]).collect();
    let sdk = root.join("plugins/sdk");
    let krate = name.replace('-', "_");
    let fill = |t: &str| {
        t.replace("{{name}}", &name).replace("{{crate}}", &krate).replace("{{Type}}", &ty).replace("{{sdk}}", &sdk.display().to_string())
    };
    std::fs::write(dir.join("Cargo.toml"), fill(include_str!("new_adapter/Cargo.toml.in")))?;
    std::fs::write(dir.join("src/lib.rs"), fill(include_str!("new_adapter/lib.rs.in")))?;
    std::fs::write(dir.join("tests/emulator.rs"), fill(include_str!("new_adapter/emulator.rs.in")))?;
    std::fs::write(dir.join("README.md"), fill(include_str!("new_adapter/README.md.in")))?;
    std::fs::write(dir.join(".gitignore"), "target/\n")?;
    eprintln!("xtask: wrote the adapter {name} to {}", dir.display());
    eprintln!("xtask: test it:  cargo test --manifest-path {}/Cargo.toml", dir.display());
    eprintln!("xtask: build it: cargo xtask plugins --path {}   (-> {}/target/plugins/{name}.wasm)", dir.display(), dir.display());
    Ok(())
}

/// Builds the adapters of the workspace in `dir` into components in `out`.
fn build_adapters(dir: &Path, out: &Path, only: &[String]) -> Result<Vec<PathBuf>> {
    let toolchain = setup()?;
    let manifest = dir.join("Cargo.toml");
    let (mut adapters, target_dir) = adapter_packages(&manifest)?;
    if adapters.is_empty() {
        bail!("no package in {} declares [package.metadata.crm-adapter] (see `cargo xtask new-adapter`)", dir.display());
    }
    if !only.is_empty() {
        let known: Vec<String> = adapters.iter().map(|a| a.name.clone()).collect();
        adapters.retain(|a| only.iter().any(|o| *o == a.name || *o == a.package));
        if adapters.len() != only.len() {
            bail!("unknown adapter in {}: the adapters are {}", only.join(", "), known.join(", "));
        }
    }

    eprintln!(
        "xtask: building {} adapter(s) for {WASM_TARGET} ({})",
        adapters.len(),
        adapters.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let packages: Vec<&str> = adapters.iter().map(|a| a.package.as_str()).collect();
    run(&mut wasm_build(&toolchain, &manifest, &packages, &[])).context("building adapters for wasm")?;

    let mut written = Vec::new();
    for a in &adapters {
        written.push(encode(&target_dir, out, a, &a.name)?);
    }
    // Feature variants (test fixtures: one adapter, several versions) build after the
    // defaults are encoded, since they overwrite the same core module.
    for a in &adapters {
        for (variant, features) in &a.variants {
            eprintln!("xtask: building {} variant {variant} (features {})", a.name, features.join(","));
            run(&mut wasm_build(&toolchain, &manifest, &[&a.package], features))
                .with_context(|| format!("building {} variant {variant}", a.name))?;
            written.push(encode(&target_dir, out, a, &format!("{}-{variant}", a.name))?);
        }
    }
    Ok(written)
}

/// `cargo build --release --target wasm32-unknown-unknown` of `packages`, with the
/// toolchain's settings.
fn wasm_build(toolchain: &Toolchain, manifest: &Path, packages: &[&str], features: &[String]) -> Command {
    let mut cmd = match toolchain {
        Toolchain::Rustup => Command::new("cargo"),
        Toolchain::Debian => {
            let mut c = Command::new(DEBIAN_CARGO);
            c.env("RUSTC", DEBIAN_RUSTC)
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld");
            c
        }
    };
    // The outer cargo's settings (rustup's toolchain pin, wrappers, flags) must not leak in.
    for var in ["RUSTUP_TOOLCHAIN", "RUSTC_WRAPPER", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    if matches!(toolchain, Toolchain::Rustup) {
        cmd.env_remove("RUSTC");
    }
    let bytes = |var: &str, default: u32| std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    let (stack, memory) = (bytes("CRM_ADAPTER_STACK", ADAPTER_STACK), bytes("CRM_ADAPTER_MEMORY", ADAPTER_MEMORY));
    cmd.env(
        "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS",
        format!("-C link-arg=-zstack-size={stack} -C link-arg=--initial-memory={memory}"),
    );
    cmd.arg("build").arg("--release").arg("--target").arg(WASM_TARGET).arg("--manifest-path").arg(manifest);
    if matches!(toolchain, Toolchain::Debian) {
        cmd.arg("-Zbuild-std=std,panic_abort");
    }
    for p in packages {
        cmd.arg("-p").arg(p);
    }
    if !features.is_empty() {
        cmd.arg("--features").arg(features.iter().map(|f| format!("{}/{f}", packages[0])).collect::<Vec<_>>().join(","));
    }
    cmd
}

/// Turns an adapter's freshly built core module (in the workspace's `target_dir`) into a
/// component named `file_name` in `out`.
fn encode(target_dir: &Path, out: &Path, a: &Adapter, file_name: &str) -> Result<PathBuf> {
    let out_dir = if a.test_only { out.join("testing") } else { out.to_path_buf() };
    std::fs::create_dir_all(&out_dir)?;
    let core = target_dir.join(WASM_TARGET).join("release").join(format!("{}.wasm", a.package.replace('-', "_")));
    let module = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .with_context(|| format!("{}: reading the component type embedded by wit-bindgen", a.package))?
        .validate(true)
        .encode()
        .with_context(|| format!("{}: encoding the component", a.package))?;
    let out = out_dir.join(format!("{file_name}.wasm"));
    std::fs::write(&out, &component)?;
    eprintln!("xtask: {file_name}: {} ({} KiB)", out.display(), component.len() / 1024);
    Ok(out)
}

struct Adapter {
    /// Cargo package name.
    package: String,
    /// Registry name.
    name: String,
    test_only: bool,
    /// `variants = { v2 = ["feature", ...] }`: also built with these features.
    variants: Vec<(String, Vec<String>)>,
}

/// The adapter packages of a workspace, and its target directory.
fn adapter_packages(manifest: &Path) -> Result<(Vec<Adapter>, PathBuf)> {
    let out = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(manifest)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let target = PathBuf::from(v["target_directory"].as_str().context("cargo metadata without target_directory")?);
    Ok((parse_adapters(&out.stdout)?, target))
}

fn parse_adapters(metadata: &[u8]) -> Result<Vec<Adapter>> {
    let v: serde_json::Value = serde_json::from_slice(metadata)?;
    let mut found = Vec::new();
    for p in v["packages"].as_array().context("metadata without packages")? {
        let meta = &p["metadata"]["crm-adapter"];
        if let Some(name) = meta["name"].as_str() {
            found.push(Adapter {
                package: p["name"].as_str().context("package without name")?.to_string(),
                name: name.to_string(),
                test_only: meta["test-only"].as_bool().unwrap_or(false),
                variants: meta["variants"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(v, f)| {
                        let features = f.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect();
                        (v.clone(), features)
                    })
                    .collect(),
            });
        }
    }
    Ok(found)
}

/// The directory of PostgreSQL's server binaries (`initdb`, `postgres`), which the
/// multi-host tests run; installs Debian's `postgresql` when it is missing.
fn postgres() -> Result<PathBuf> {
    let find = || -> Option<PathBuf> {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").is_file() && bin.join("postgres").is_file())
            .collect();
        found.sort();
        found.pop().map(|(_, bin)| bin)
    };
    if let Some(bin) = std::env::var_os("CRM_PG_BIN").map(PathBuf::from).or_else(find) {
        return Ok(bin);
    }
    let root_user = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if !which("apt-get") || !root_user {
        bail!("the multi-host tests need a PostgreSQL server: as root `apt-get install postgresql`, or set CRM_PG_BIN to the directory of initdb and postgres");
    }
    eprintln!("xtask: installing postgresql (the tests start their own servers in temporary directories)");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", "postgresql"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    find().context("installed postgresql but found no /usr/lib/postgresql/*/bin/initdb")
}

/// Debian's chromium and chromedriver, for the console's browser tests (never skipped).
fn browser() -> Result<()> {
    let have = || Path::new("/usr/bin/chromium").is_file() && Path::new("/usr/bin/chromedriver").is_file();
    if have() || std::env::var_os("CRM_CHROMEDRIVER").is_some() {
        return Ok(());
    }
    let root_user = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    if !which("apt-get") || !root_user {
        bail!("the console's browser tests need chromium: as root `apt-get install chromium chromium-driver`, or set CRM_CHROMIUM and CRM_CHROMEDRIVER");
    }
    eprintln!("xtask: installing chromium and chromium-driver (the console's tests drive a real browser, headless, on loopback)");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", "chromium", "chromium-driver"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if !have() {
        bail!("installed chromium and chromium-driver but /usr/bin/chromium or /usr/bin/chromedriver is missing");
    }
    Ok(())
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    let components = plugins(root)?;
    let pg_bin = postgres()?;
    browser()?;
    eprintln!("xtask: adapter unit tests (native)");
    run(Command::new("cargo").arg("test").arg("--manifest-path").arg(root.join("plugins/Cargo.toml")).args(["--workspace", "--all-features"]))?;
    eprintln!("xtask: the SDK's documentation (every public item documented, every link resolved)");
    run(Command::new("cargo")
        .arg("doc")
        .arg("--manifest-path")
        .arg(root.join("plugins/Cargo.toml"))
        .args(["--no-deps", "--package", "crm-sdk", "--package", "crm-call", "--features", "crm-sdk/native"])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    eprintln!(
        "xtask: host and integration tests ({} components; a cold build compiles wasmtime: about 10 minutes on 2 cores)",
        components.len()
    );
    run(Command::new("cargo")
        .current_dir(root)
        .args(["test", "--workspace"])
        .args(extra)
        .env("CRM_PLUGINS_DIR", root.join("target/plugins"))
        .env("CRM_XTASK", std::env::current_exe()?)
        .env("CRM_PG_BIN", pg_bin))
}

fn demo(root: &Path, extra: &[String]) -> Result<()> {
    plugins(root)?;
    eprintln!("xtask: building crm-host and the demo (a cold build compiles wasmtime: about 10 minutes on 2 cores)");
    run(Command::new("cargo").current_dir(root).args(["build", "--package", "crm-host", "--bin", "crm-host"]))?;
    run(Command::new("cargo").current_dir(root).args(["build", "--package", "crm-tests", "--bin", "demo"]))?;
    eprintln!("xtask: starting the demo");
    run(Command::new(root.join("target/debug/demo"))
        .current_dir(root)
        .args(extra)
        .env("CRM_PLUGINS_DIR", root.join("target/plugins"))
        .env("CRM_HOST_BIN", root.join("target/debug/crm-host")))
}

fn bench(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("neighbours") => {
            plugins(root)?;
            eprintln!("xtask: noisy-neighbour benchmark (about a minute)");
            run(Command::new("cargo")
                .current_dir(root)
                .args(["run", "--quiet", "--package", "crm-tests", "--bin", "neighbours"])
                .env("CRM_PLUGINS_DIR", root.join("target/plugins"))
                .env("RUST_LOG", "error"))
        }
        None => {
            plugins(root)?;
            eprintln!("xtask: release build of the host and the benchmark (a cold one compiles wasmtime: about 10 minutes on 2 cores)");
            run(Command::new("cargo").current_dir(root).args(["build", "--release", "--package", "crm-tests", "--bin", "bench", "--bin", "crm-host-under-test"]))?;
            let wasmtime = wasmtime_cli(root)?;
            eprintln!("xtask: host-vs-native and replicas benchmark (about 5 minutes)");
            // The host runs with its default logging, as operators run it.
            let pg_bin = postgres()?;
            run(Command::new(root.join("target/release/bench"))
                .current_dir(root)
                .env("CRM_PLUGINS_DIR", root.join("target/plugins"))
                .env("CRM_WASMTIME", wasmtime)
                .env("CRM_PG_BIN", pg_bin)
                .env_remove("RUST_LOG"))
        }
        Some("ab") => {
            plugins(root)?;
            run(Command::new("cargo").current_dir(root).args(["build", "--release", "--package", "crm-tests", "--bin", "bench", "--bin", "crm-host-under-test"]))?;
            eprintln!("xtask: two builds side by side (BENCH_AB, BENCH_AB_PLUGINS; about a minute)");
            run(Command::new(root.join("target/release/bench"))
                .arg("ab")
                .current_dir(root)
                .env("CRM_PLUGINS_DIR", root.join("target/plugins"))
                .env_remove("RUST_LOG"))
        }
        _ => bail!("usage: cargo xtask bench [neighbours|ab]"),
    }
}

/// `wasmtime` of the host's own wasmtime version, for the benchmark's `wasmtime serve` peer:
/// installed from crates.io into `target/tools` on first use (a build of about 15 minutes).
fn wasmtime_cli(root: &Path) -> Result<PathBuf> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock"))?;
    let version = lock
        .split("[[package]]")
        .find_map(|p| p.contains("\nname = \"wasmtime\"\n").then(|| p.split("version = \"").nth(1)?.split('"').next()).flatten())
        .context("Cargo.lock pins no wasmtime")?;
    let dir = root.join("target/tools").join(format!("wasmtime-{version}"));
    let bin = dir.join("bin/wasmtime");
    if !bin.exists() {
        eprintln!("xtask: installing wasmtime-cli {version} for the benchmark's `wasmtime serve` row (once; about 15 minutes on 2 cores)");
        run(Command::new("cargo").args(["install", "wasmtime-cli", "--locked", "--version", &format!("={version}"), "--root"]).arg(&dir))?;
    }
    Ok(bin)
}

/// The long run (`tests/src/soak.rs`) against a release host: MINUTES (60) at RATE calls/s (50).
fn soak(root: &Path, args: &[String]) -> Result<()> {
    for a in args {
        a.parse::<u64>().with_context(|| format!("usage: cargo xtask soak [MINUTES] [RATE], not {a}"))?;
    }
    plugins(root)?;
    eprintln!("xtask: release build of the host and the soak (a cold one compiles wasmtime: about 10 minutes on 2 cores)");
    run(Command::new("cargo").current_dir(root).args(["build", "--release", "--package", "crm-tests", "--bin", "soak", "--bin", "crm-host-under-test"]))?;
    run(Command::new(root.join("target/release/soak"))
        .current_dir(root)
        .args(args)
        .env("CRM_PLUGINS_DIR", root.join("target/plugins"))
        .env("CRM_HOST_BIN", root.join("target/release/crm-host-under-test")))
}

/// The property-based fuzz targets (host: call and tenant bodies, limits; adapters:
/// crmConfig validation, form decoding, the Planfix webhook), each for `SECONDS`.
fn fuzz(root: &Path, args: &[String]) -> Result<()> {
    let secs: u64 = match args.first() {
        Some(s) => s.parse().context("usage: cargo xtask fuzz [SECONDS]")?,
        None => 60,
    };
    let secs = secs.to_string();
    run(Command::new("cargo")
        .current_dir(root)
        .args(["test", "--package", "crm-host", "--lib", "fuzz::", "--", "--nocapture", "--test-threads", "1"])
        .env("CRM_FUZZ_SECS", &secs))?;
    // The outbound path against arbitrary CRM answers needs the adapters built.
    plugins(root)?;
    run(Command::new("cargo")
        .current_dir(root)
        .args(["test", "--package", "crm-tests", "--test", "all", "outbound_fuzz", "--", "--nocapture"])
        .env("CRM_PLUGINS_DIR", root.join("target/plugins"))
        .env("CRM_FUZZ_SECS", &secs))?;
    run(Command::new("cargo")
        .arg("test")
        .arg("--manifest-path")
        .arg(root.join("plugins/Cargo.toml"))
        .args(["--package", "crm-fuzz", "--", "--nocapture", "--test-threads", "1"])
        .env("CRM_FUZZ_SECS", &secs))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
