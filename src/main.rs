fn main() -> std::process::ExitCode {
    flight_companion::cli::main()
}
