//! The `meshcache` command line: `run`, `config show|check`, `ca`, `cache stats|list|purge|clear`,
//! `mesh addr`, `group create|join|list|leave`, `share FILE`, `get TICKET`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use meshcache::settings::{default_data_dir, Settings};
use meshcache::App;

mod cli;

use cli::share;

#[derive(Parser)]
#[command(name = "meshcache", version, about = "An on-device HTTP caching proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by the commands that use the data directory.
#[derive(clap::Args, Clone)]
struct Common {
    /// Configuration file (TOML). Without it, every setting has its default.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Data directory (overrides `data.dir`). Default: the platform's data directory.
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy until interrupted (Ctrl-C or SIGTERM).
    Run {
        #[command(flatten)]
        common: Common,
        /// Address to listen on (overrides `listen.forward`). Default 127.0.0.1:3128.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Add a mesh peer by its ticket (`meshcache mesh addr` on the peer); repeatable.
        #[arg(long = "peer", value_name = "TICKET")]
        peers: Vec<String>,
        /// Add a stranger by its open-mesh ticket (the status page shows a device's);
        /// repeatable.
        #[arg(long = "open-peer", value_name = "TICKET")]
        open_peers: Vec<String>,
        /// Trust attestations signed by this carriage operator (endpoint id), whoever
        /// relays them; repeatable (adds to `mesh.operators`).
        #[arg(long = "operator", value_name = "ID")]
        operators: Vec<String>,
        /// UDP address of the open mesh's endpoint (overrides `mesh.open_listen`).
        #[arg(long, value_name = "ADDR")]
        open_listen: Option<SocketAddr>,
        /// Talk to no strangers (overrides `mesh.open`).
        #[arg(long)]
        no_open: bool,
        /// UDP address of the mesh endpoint (overrides `mesh.listen`).
        #[arg(long, value_name = "ADDR")]
        mesh_listen: Option<SocketAddr>,
        /// Do not look for peers by mDNS (overrides `mesh.mdns`).
        #[arg(long)]
        no_mdns: bool,
        /// Run without the mesh (overrides `mesh.enabled`).
        #[arg(long)]
        no_mesh: bool,
    },
    /// This device on the mesh.
    Mesh {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: MeshCommand,
    },
    /// Groups of devices that share their caches with each other.
    Group {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Share a file with someone nearby: prints a ticket, and its QR code on stderr (needs
    /// `meshcache run`).
    Share {
        #[command(flatten)]
        common: Common,
        file: PathBuf,
        /// The name the file is shared under. Default: its file name.
        #[arg(long)]
        name: Option<String>,
        /// The running proxy's address. Default: `listen.forward` of the configuration.
        #[arg(long, value_name = "ADDR")]
        proxy: Option<SocketAddr>,
    },
    /// Fetch a file shared with `meshcache share`, straight from the sharer.
    Get {
        /// The ticket (`meshshare…`), or a share URL that holds it
        /// (`http://meshcache.local/share/<ticket>`, `http://HOST:PORT/share/<ticket>`).
        ticket: String,
        /// Where to write it. Default: the shared name, in the current directory.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Show or check the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The local certificate authority that HTTPS interception uses.
    Ca {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Inspect or change the cache. Run these while the proxy is stopped: the data
    /// directory belongs to one process at a time.
    Cache {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, every default included.
    Show {
        #[command(flatten)]
        common: Common,
    },
    /// Validate a configuration file.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Print the CA certificate (PEM; `--der` writes DER bytes to stdout) to install it in
    /// clients. Creates the CA if it does not exist yet.
    Export {
        #[arg(long)]
        der: bool,
    },
    /// Print where the CA certificate file is.
    Path,
}

#[derive(Subcommand)]
enum MeshCommand {
    /// Print this device's mesh address as a ticket, for `--peer` / `mesh.peers`. The
    /// running proxy is asked first: it knows the port it bound (another one than
    /// `mesh.listen`'s when that was taken).
    Addr {
        /// The running proxy's address. Default: `listen.forward` of the configuration.
        #[arg(long, value_name = "ADDR")]
        proxy: Option<SocketAddr>,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group and join it; prints its ticket for others to join.
    Create,
    /// Join a group by its ticket.
    Join { ticket: String },
    /// List the groups this device is in (their tickets are secrets: share with care).
    List,
    /// Leave a group.
    Leave { ticket: String },
}

#[derive(Subcommand)]
pub(crate) enum CacheCommand {
    /// Entry count and sizes.
    Stats,
    /// Every stored entry.
    List,
    /// Remove every stored variant of a URL.
    Purge { url: String },
    /// Remove everything.
    Clear,
    /// Check the data directory: every entry's body complete and hashing to its name, the
    /// index's size accounting, no orphan bodies. Exits with status 1 on any problem.
    Check,
}

fn load_config(common: &Common) -> Result<config::Config> {
    let mut cfg = match &common.config {
        Some(path) => config::Config::load(path)?,
        None => config::Config::default(),
    };
    if let Some(dir) = &common.data_dir {
        cfg.data.dir = Some(dir.clone());
    }
    Ok(cfg)
}

fn data_dir(cfg: &config::Config) -> PathBuf {
    cfg.data.dir.clone().unwrap_or_else(default_data_dir)
}

fn init_logs(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log piped to a file or journald must stay plain text.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    cli::memory::tune();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshcache: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshcache: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            common,
            listen,
            peers,
            open_peers,
            operators,
            open_listen,
            no_open,
            mesh_listen,
            no_mdns,
            no_mesh,
        } => {
            let mut cfg = load_config(&common)?;
            if let Some(addr) = listen {
                cfg.listen.forward = addr;
            }
            cfg.mesh.peers.extend(peers);
            cfg.mesh.open_peers.extend(open_peers);
            cfg.mesh.operators.extend(operators);
            if let Some(addr) = open_listen {
                cfg.mesh.open_listen = addr;
            }
            cfg.mesh.open &= !no_open;
            if let Some(addr) = mesh_listen {
                cfg.mesh.listen = addr;
            }
            cfg.mesh.mdns &= !no_mdns;
            cfg.mesh.enabled &= !no_mesh;
            cfg.validate()?;
            init_logs(&cfg.log.level);
            cli::memory::Trimmer::spawn();
            let signals = cli::Signals::install();
            let mut settings = Settings::from_config(&cfg, data_dir(&cfg));
            // Unless origin.proxy is set: http_proxy & co., as curl reads them.
            settings.upstream_from_environment(&meshcache::settings::ProcessEnvironment);
            let proxy = App::new(settings).start().await?;
            if let Some(m) = proxy.mesh() {
                eprintln!("meshcache: mesh endpoint {} ticket {}", m.id(), m.ticket());
                if let (Some(o), Some(t)) = (m.open_status(), m.open_ticket()) {
                    eprintln!("meshcache: open mesh {} ticket {t}", o.id);
                }
            }
            eprintln!(
                "meshcache: proxy listening on http://{} (Ctrl-C to stop)",
                proxy.addr()
            );
            signals.wait().await;
            tracing::info!("shutting down");
            proxy.shutdown().await;
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Show { common },
        } => {
            let mut cfg = load_config(&common)?;
            cfg.data.dir = Some(data_dir(&cfg));
            print!("{}", cfg.to_toml_string());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            config::Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Ca { common, command } => {
            let cfg = load_config(&common)?;
            let dir = meshcache::settings::ca_dir(&data_dir(&cfg));
            let ca = certs::Ca::load_or_create(&dir)?;
            match command {
                CaCommand::Export { der: false } => print!("{}", ca.cert_pem()),
                CaCommand::Export { der: true } => {
                    use std::io::Write;
                    std::io::stdout().write_all(ca.cert_der())?;
                }
                CaCommand::Path => println!("{}", ca.cert_path().display()),
            }
            Ok(())
        }
        Command::Mesh {
            common,
            command: MeshCommand::Addr { proxy },
        } => {
            let cfg = load_config(&common)?;
            let dir = data_dir(&cfg).join("mesh");
            let proxy = proxy.unwrap_or(cfg.listen.forward);
            println!("{}", cli::addr::addr(&dir, cfg.mesh.listen, proxy).await?);
            Ok(())
        }
        Command::Group { common, command } => {
            let cfg = load_config(&common)?;
            let groups = mesh::Groups::open(&data_dir(&cfg).join("mesh"))?;
            match command {
                GroupCommand::Create => {
                    let g = mesh::Group::generate()?;
                    groups.add(&g)?;
                    println!("{}", g.ticket());
                    eprintln!(
                        "meshcache: created and joined; others join with: meshcache group join {}\n\
                         or by scanning this code (the ticket is the group's secret):",
                        g.ticket()
                    );
                    cli::eprint_qr(&g.ticket());
                }
                GroupCommand::Join { ticket } => {
                    let g = mesh::Group::from_ticket(&ticket)?;
                    if groups.add(&g)? {
                        eprintln!(
                            "meshcache: joined (a running proxy picks it up for new connections)"
                        );
                    } else {
                        eprintln!("meshcache: already in this group");
                    }
                }
                GroupCommand::List => {
                    for g in groups.current()? {
                        println!("{}", g.ticket());
                    }
                }
                GroupCommand::Leave { ticket } => {
                    let g = mesh::Group::from_ticket(&ticket)?;
                    if !groups.remove(&g)? {
                        bail!("not in this group");
                    }
                    eprintln!("meshcache: left the group");
                }
            }
            Ok(())
        }
        Command::Share {
            common,
            file,
            name,
            proxy,
        } => {
            let cfg = load_config(&common)?;
            let name = name.unwrap_or_else(|| {
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "shared-file".into())
            });
            let ticket = share::upload(proxy.unwrap_or(cfg.listen.forward), &file, &name).await?;
            println!("{ticket}");
            eprintln!(
                "meshcache: shared {name}; the other side runs: meshcache get {ticket}\n\
                 or opens http://meshcache.local/share/{ticket} through its proxy,\n\
                 or scans this code (the ticket):"
            );
            cli::eprint_qr(&ticket);
            Ok(())
        }
        Command::Get { ticket, output } => {
            let t = mesh::share::ShareTicket::decode_ticket_or_url(&ticket)?;
            let out = output.unwrap_or_else(|| PathBuf::from(&t.name));
            share::download(&t, &out).await?;
            eprintln!(
                "meshcache: {} ({} bytes) written to {}",
                t.name,
                t.size,
                out.display()
            );
            Ok(())
        }
        Command::Cache { common, command } => {
            let cfg = load_config(&common)?;
            let settings = Settings::from_config(&cfg, data_dir(&cfg));
            cli::cache::run(&settings.cache.dir, settings.cache.clone(), command).await
        }
    }
}
