//! `crm-host`, as the CLI tests run it: the same `crm_host::cli::main` the binary runs.

fn main() -> anyhow::Result<()> {
    crm_host::cli::main()
}
