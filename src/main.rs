fn main() -> color_eyre::Result<()> {
    deltalink::cli::main()
}
