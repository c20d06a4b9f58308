//! `flight-companion-ground`: the ground bridge on its own (see `cli::ground_main`).

fn main() -> std::process::ExitCode {
    flight_companion::cli::ground_main()
}
