//! The command line: one binary, several entry points.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
#[cfg(feature = "dev-setup")]
pub use crate::dev_setup::CertCommand;
pub use crate::probe::ProbeArgs;
#[cfg(feature = "sim")]
pub use crate::sim::args::{SimArgs, SimAutopilot};

/// Onboard daemon between MCP ground clients (over mTLS MQTT 5) and a MAVLink autopilot.
#[derive(Debug, Parser)]
#[command(name = "flight-companion", version = crate::VERSION, long_version = crate::LONG_VERSION, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file (TOML). Without it, built-in defaults are used.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Parse a configuration file and report the first problem; exits non-zero if any.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
    },
    /// Run the simulated autopilot (an ArduCopter or PX4 multicopter seen from outside).
    #[cfg(feature = "sim")]
    Sim(SimArgs),
    /// Connect to an autopilot, wait for its heartbeat, print its state and link health.
    Probe(ProbeArgs),
    /// Write certificates, a Mosquitto config with mTLS and ACLs, drone.toml and ground.toml
    /// for a local trial.
    #[cfg(feature = "dev-setup")]
    DevSetup(crate::dev_setup::DevSetupArgs),
    /// Run the whole chain on this machine (simulator, broker, daemon, ground bridge) and
    /// drive it as an MCP client would, saying what happens.
    #[cfg(feature = "hil")]
    Demo(crate::demo::DemoArgs),
    /// EMERGENCY STOP through the running daemon's local socket: hold now, then land.
    /// Prints the daemon's answer (`OK ...` or `ERR ...`); exits 0 only when the stop is
    /// latched.
    Estop(EstopArgs),
    /// On the ground: a stdio MCP server forwarding to one drone over mTLS MQTT 5.
    /// Only MCP JSON-RPC is written to stdout; logs go to stderr.
    Ground(GroundArgs),
    /// Simulate the safety microcontroller (firmware bridge) on a serial device or pty;
    /// stdin commands `press`, `release`, `silence`, `resume`; prints `bridge-sim: ...` lines.
    #[cfg(feature = "sim")]
    BridgeSim(crate::bridge::sim::BridgeSimArgs),
    /// Keys and tokens for ground clients (dev and small deployments).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Certificates of ground users and stations in a dev-setup directory: issue, revoke,
    /// list, renew the CRL.
    #[cfg(feature = "dev-setup")]
    #[command(subcommand)]
    Cert(CertCommand),
    /// Read and check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Hardware-in-the-loop rig: scripted scenarios with injected faults against the
    /// simulator, SITL or a bench autopilot; a summary and JUnit XML.
    #[cfg(feature = "hil")]
    #[command(subcommand)]
    Hil(HilCommand),
    /// MAVLink 2 signing of the autopilot link: make a key, install it on the autopilot.
    #[command(subcommand)]
    Signing(crate::signing_tool::SigningCommand),
}

#[cfg(feature = "hil")]
#[derive(Debug, Subcommand)]
pub enum HilCommand {
    /// Run scenarios (default: every file in hil/scenarios). Exits 0 only when none failed.
    Run(crate::hil::cmd::HilRunArgs),
    /// Keep the rig up for minutes under telemetry load, MCP sessions, flights, a fault a
    /// minute and e-stops; sample the daemon from /proc; judge memory, recovery, e-stops
    /// and the audit log. Exits 0 only when every criterion held.
    Soak(crate::hil::runner::soak::SoakArgs),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Write a key pair: `DIR/<kid>.key` (PKCS#8, mode 0600) and `DIR/<kid>.pub`.
    /// Prints the two paths and the `[[auth.keys]]` entry for drone.toml.
    Keygen {
        #[arg(long, value_enum, default_value = "eddsa")]
        alg: TokenAlg,
        #[arg(long)]
        out: PathBuf,
        /// Key id; default `ground-key`.
        #[arg(long, default_value = "ground-key")]
        kid: String,
    },
    /// Sign a token; prints it on stdout (one line, nothing else).
    Issue {
        /// Private key (PKCS#8 PEM, Ed25519 or P-256).
        #[arg(long)]
        key: PathBuf,
        /// PUBLIC, READ_ONLY, OPERATOR or ADMIN.
        #[arg(long)]
        role: String,
        /// The person or agent (`sub`).
        #[arg(long)]
        subject: String,
        /// The drone's server name or its fleet (`aud`).
        #[arg(long)]
        audience: String,
        /// Lifetime: 90s, 15m, 8h, 30d.
        #[arg(long, default_value = "8h")]
        ttl: String,
        /// Key id; default the key file's name without extension.
        #[arg(long)]
        kid: Option<String>,
        /// Token id (`jti`, for revocation); default random.
        #[arg(long)]
        jti: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenAlg {
    Eddsa,
    Es256,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every record, the hash chain and the Merkle tree, against checkpoints signed by
    /// the drone when given; exit 1 naming what is damaged or tampered with, and where.
    /// Without a checkpoint it says what it cannot prove.
    Verify {
        dir: PathBuf,
        /// A checkpoint (signed note) to check the log against; repeatable.
        #[arg(long = "checkpoint")]
        checkpoints: Vec<PathBuf>,
        /// A witness directory (`audit witness --out DIR`): every checkpoint it kept.
        #[arg(long)]
        witness: Option<PathBuf>,
        /// Verifier keys to trust (files of `name+id+key` lines). Default: the witness's,
        /// else the key the log names (said in the verdict).
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
    },
    /// On the ground: subscribe to the drones' checkpoints and keep every one that verifies.
    Witness(crate::audit::witness::WitnessArgs),
    /// Write a new checkpoint signing key (PKCS#8 PEM, mode 0600; refuses to overwrite).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the verifier key (what the witness trusts) of the daemon's signing key.
    Vkey {
        /// The daemon's configuration (its `[audit]` key and origin); default built-ins.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The key file; overrides the configuration's.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Print the last records.
    Tail {
        dir: PathBuf,
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct EstopArgs {
    /// Why (logged and shown to every ground client).
    #[arg(long, default_value = "local estop command")]
    pub reason: String,
    /// The daemon's configuration, to find `estop.socket_path`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The socket; overrides the configuration.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Print the e-stop status (JSON) instead of stopping.
    #[arg(long)]
    pub status: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GroundArgs {
    /// Bridge configuration (TOML: `[mqtt]` as in the daemon's file, `[ground]`). Also read
    /// from FLIGHT_COMPANION_GROUND_CONFIG, for hosts that keep `--config` for themselves
    /// (the MCP Inspector); the option wins when both are given.
    #[arg(long, env = "FLIGHT_COMPANION_GROUND_CONFIG")]
    pub config: PathBuf,
    /// Server name of the drone; overrides `ground.server_name`.
    #[arg(long)]
    pub server_name: Option<String>,
    /// MQTT client id (mcp-client-id); overrides `ground.client_id`. Default: unique per process.
    #[arg(long)]
    pub client_id: Option<String>,
    /// File holding the JWT to present; overrides `ground.token_path`.
    #[arg(long)]
    pub token: Option<PathBuf>,
    /// Fleet mode: serve every drone whose server name matches this pattern (MQTT filter
    /// style, `fleet/#`) as one MCP server. Repeatable; overrides `fleet.server_names`.
    #[arg(long = "fleet", value_name = "PATTERN")]
    pub fleet: Vec<String>,
    /// Serve the web console on this address (fleet mode; loopback unless
    /// `console.allow_non_loopback`); overrides `console.listen`.
    #[arg(long = "console", value_name = "ADDR:PORT")]
    pub console: Option<std::net::SocketAddr>,
}

// A binary of its own for the ground station because of memory: the bridge runs beside a
// GCS, and the daemon's binary maps pages of code the bridge never runs (BENCHMARKS.md,
// issue 17). `flight-companion ground` stays, for a machine that has the daemon's package.
/// On the ground: a stdio MCP server forwarding to drones over mTLS MQTT 5 (the same bridge
/// as `flight-companion ground`).
#[derive(Debug, Parser)]
#[command(name = "flight-companion-ground", version = crate::VERSION, long_version = crate::LONG_VERSION)]
pub struct GroundCli {
    #[command(flatten)]
    pub args: GroundArgs,
}

/// Entry point of `flight-companion-ground`; the same bridge as `flight-companion ground`.
pub fn ground_main() -> ExitCode {
    ground(GroundCli::parse().args)
}

/// Entry point of the binary; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Run { config } => run_daemon(config),
        #[cfg(feature = "sim")]
        Command::Sim(args) => {
            crate::logging::init("info");
            run_async(|shutdown| crate::sim::shell::run(args, shutdown))
        }
        Command::Ground(args) => ground(args),
        Command::Probe(args) => {
            crate::logging::init("warn");
            run_async(|shutdown| crate::probe::run(args, shutdown))
        }
        Command::Estop(args) => estop(args),
        #[cfg(feature = "hil")]
        Command::Demo(args) => {
            crate::logging::init("warn");
            run_async(|shutdown| crate::demo::run(args, shutdown))
        }
        Command::Token(command) => token_command(command),
        #[cfg(feature = "dev-setup")]
        Command::Cert(command) => print_lines(crate::dev_setup::cert_command(command)),
        Command::Audit(command) => audit_command(command),
        Command::Signing(crate::signing_tool::SigningCommand::Keygen { out }) => {
            print_lines(crate::signing_tool::keygen(&out))
        }
        Command::Signing(crate::signing_tool::SigningCommand::Install(args)) => {
            crate::logging::init("warn");
            run_async(|shutdown| crate::signing_tool::install(args, shutdown))
        }
        #[cfg(feature = "hil")]
        Command::Hil(HilCommand::Run(args)) => {
            crate::logging::init("warn");
            run_async(|shutdown| crate::hil::cmd::run(args, shutdown))
        }
        #[cfg(feature = "hil")]
        Command::Hil(HilCommand::Soak(args)) => {
            crate::logging::init("warn");
            run_async(|shutdown| crate::hil::runner::soak::run(args, shutdown))
        }
        #[cfg(feature = "sim")]
        Command::BridgeSim(args) => {
            crate::logging::init("warn");
            run_async(|shutdown| crate::bridge::sim::run(args, shutdown))
        }
        #[cfg(feature = "dev-setup")]
        Command::DevSetup(args) => match crate::dev_setup::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// `check-config FILE`: the file is valid, the signing key readable; warnings about where
/// the envelope is.
fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            // The daemon reads the signing key at start and stops if it cannot: say so now.
            if config.vehicle.signing.mode != crate::link::signing::SigningMode::Off
                && let Some(path) = &config.vehicle.signing.key_path
                && let Err(e) = crate::link::keys::load_key(path)
            {
                eprintln!("error: {}: vehicle.signing.key_path: {e}", file.display());
                return ExitCode::from(2);
            }
            // The daemon refuses to start without a writable audit log: say so now.
            if let Some(dir) = config.audit.resolved_dir()
                && let Some(why) = crate::audit::read_only_reason(&dir)
            {
                eprintln!(
                    "error: {}: audit.dir {}: {why}",
                    file.display(),
                    dir.display()
                );
                return ExitCode::from(2);
            }
            // Valid, but perhaps drawn for another place: said now, not at the field.
            let warnings = crate::last_home::site_warnings(&config);
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            match warnings.len() {
                0 => println!("{}: ok", file.display()),
                n => println!(
                    "{}: ok, with {n} warning{} about where the envelope is",
                    file.display(),
                    if n == 1 { "" } else { "s" }
                ),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `run`: the daemon.
fn run_daemon(config: Option<PathBuf>) -> ExitCode {
    let config = match config {
        Some(path) => match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    crate::logging::init(&config.logging.filter);
    run_async_on(DAEMON_WORKERS, |shutdown| {
        crate::daemon::run(config, shutdown)
    })
}

/// `ground`: the ground bridge.
fn ground(args: GroundArgs) -> ExitCode {
    let config = match crate::ground::config::GroundConfig::load_with_overrides(
        &args.config,
        args.server_name,
        args.client_id,
        args.fleet,
    ) {
        Ok(mut c) => {
            if args.token.is_some() {
                c.ground.token_path = args.token;
            }
            if args.console.is_some() {
                c.console.listen = args.console;
                if let Err((key, message)) = c.console.check(c.fleet.enabled()) {
                    eprintln!("error: {key} (--console): {message}");
                    return ExitCode::from(2);
                }
            }
            c
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init("info");
    run_async(|shutdown| crate::ground::shell::run(config, crate::VERSION, shutdown))
}

/// `audit verify|witness|keygen|vkey|tail`.
fn audit_command(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify {
            dir,
            checkpoints,
            witness,
            keys,
        } => {
            let options = crate::audit::VerifyOptions {
                checkpoints,
                witness,
                keys,
            };
            match crate::audit::verify_command(&dir, &options) {
                Ok(lines) => {
                    for line in lines {
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(lines) => {
                    for line in lines {
                        println!("{line}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        AuditCommand::Witness(args) => {
            crate::logging::init("warn");
            run_async(|shutdown| crate::audit::witness::run(args, shutdown))
        }
        AuditCommand::Keygen { out } => {
            match crate::audit::checkpoint::generate_signing_key(&out) {
                Ok(_) => {
                    println!("{}", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        AuditCommand::Vkey { config, key } => audit_vkey(config, key),
        AuditCommand::Tail { dir, n, json } => {
            print_lines(crate::audit::tail_command(&dir, n, json))
        }
    }
}

fn token_command(command: TokenCommand) -> ExitCode {
    use crate::auth::shell;
    use crate::auth::token::KeyAlg;
    let result = match command {
        TokenCommand::Keygen { alg, out, kid } => {
            let alg = match alg {
                TokenAlg::Eddsa => KeyAlg::EdDsa,
                TokenAlg::Es256 => KeyAlg::Es256,
            };
            shell::keygen_to(&out, alg, &kid).map(|(key, public)| {
                println!("private key: {}", key.display());
                println!("public key: {}", public.display());
                println!(
                    "drone.toml:\n[[auth.keys]]\nkid = \"{kid}\"\nalg = \"{}\"\npublic_key_path = \"{}\"",
                    alg.name(),
                    public.display()
                );
            })
        }
        TokenCommand::Issue {
            key,
            role,
            subject,
            audience,
            ttl,
            kid,
            jti,
        } => (|| {
            let role = crate::role::Role::from_name(&role).ok_or_else(|| {
                format!("unknown role `{role}`; one of PUBLIC, READ_ONLY, OPERATOR, ADMIN")
            })?;
            let ttl = shell::parse_duration(&ttl)?;
            let token = shell::issue_from_file(&shell::IssueRequest {
                key_path: &key,
                kid: kid.as_deref(),
                role,
                subject: &subject,
                audience: &audience,
                ttl,
                jti,
                now_unix_s: shell::unix_s_now(),
            })?;
            println!("{token}");
            Ok(())
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn estop(args: EstopArgs) -> ExitCode {
    let candidates = match (&args.socket, &args.config) {
        (Some(socket), _) => vec![socket.clone()],
        (None, Some(file)) => match Config::load(file) {
            Ok(c) => c.estop.socket_candidates(),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => Config::default().estop.socket_candidates(),
    };
    // The first that exists: this user's default, then the system service's.
    let Some(path) = candidates
        .iter()
        .find(|p| p.exists())
        .or(candidates.first())
        .cloned()
    else {
        eprintln!("error: the local e-stop socket is disabled (estop.socket_path = \"\")");
        return ExitCode::from(2);
    };
    let line = if args.status {
        "STATUS".to_string()
    } else {
        // One line: the reason cannot smuggle a second request.
        format!("STOP {}", args.reason.replace(['\n', '\r'], " "))
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::estop::local::request(&path, &line)) {
        Ok(reply) => {
            println!("{reply}");
            if reply.starts_with("OK") {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Worker threads of the tools, simulators and the ground bridge.
const WORKERS: usize = 2;

/// Worker threads of the daemon's main runtime: one. The decision loop has a thread of its
/// own (`daemon::run`), the audit writer too, and the camera's decoding and file IO run on the
/// blocking pool, so what is left on the workers is short tasks handing each MCP call along
/// (the MQTT driver, the shell, the session's rmcp service, its request's task), where a
/// second worker made hand-offs wake the other thread (twice the `futex` calls per call):
/// with one, the daemon's CPU per `get_status` is 0.71-0.88x with `fsync = "never"` and
/// 0.92-0.94x with `"always"` (BENCHMARKS.md, issue 17), and the second core is left to the
/// loop, the audit writer and the companion's vision. A stall of this runtime is seen by the
/// loop (`GroundState::serving_at`).
const DAEMON_WORKERS: usize = 1;

/// Runs an async entry point on a tokio runtime, cancelling it on SIGTERM/SIGINT.
/// The entry point returns its exit code; an error is printed and exits 1.
fn run_async<F, Fut>(entry: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<ExitCode>>,
{
    run_async_on(WORKERS, entry)
}

/// [`run_async`] with `workers` worker threads.
fn run_async_on<F, Fut>(workers: usize, entry: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<ExitCode>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        spawn_signal_watch(shutdown.clone());
        entry(shutdown).await
    });
    // Never wait on stuck blocking tasks (serial reads) at exit: shutdown must finish in 2 s.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn spawn_signal_watch(shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        shutdown.cancel();
    });
}

/// `audit vkey`: the verifier key of the configured (or given) signing key.
fn audit_vkey(config: Option<PathBuf>, key: Option<PathBuf>) -> ExitCode {
    let config = match config {
        Some(path) => match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    let Some(path) = key.or_else(|| config.audit.resolved_signing_key().map(|(p, _)| p)) else {
        eprintln!("error: the audit log is disabled (audit.danger_disabled): no key");
        return ExitCode::from(2);
    };
    let origin = config.audit.resolved_origin(&config.mcp.server_name);
    match crate::audit::checkpoint::load_signing_key(&path)
        .and_then(|k| crate::audit::checkpoint::AuditKey::new(k, &origin))
    {
        Ok(k) => {
            println!("{}", k.verifier_key());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A command's output lines on stdout and success, or its error on stderr and exit code 2
/// (the code of every refused command line).
fn print_lines<E: std::fmt::Display>(result: Result<Vec<String>, E>) -> ExitCode {
    match result {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
