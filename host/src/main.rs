fn main() -> anyhow::Result<()> {
    crm_host::cli::main()
}
