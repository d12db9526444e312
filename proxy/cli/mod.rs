//! The command line's own code (bin only): `cache` commands, `mesh addr`, `share` / `get`,
//! signals, the allocator's tuning and trimming.

pub(crate) mod addr;
pub(crate) mod cache;
pub(crate) mod memory;
pub(crate) mod share;

/// Prints a QR code of `ticket` on stderr: black on white on a terminal, plain block
/// characters (the dark modules) when stderr is a file or a pipe.
pub(crate) fn eprint_qr(ticket: &str) {
    use std::io::IsTerminal;
    if let Some(code) = meshcache::qr::terminal(ticket, std::io::stderr().is_terminal()) {
        eprintln!("{}", code.trim_end_matches('\n'));
    }
}

/// Ctrl-C and SIGTERM, caught from the moment this is made: make it before telling anyone
/// the proxy is up, so a signal sent right after that shuts down cleanly instead of killing
/// the process (the default action until a handler is installed).
pub(crate) struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(crate) fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for Ctrl-C or SIGTERM.
    pub(crate) async fn wait(mut self) {
        #[cfg(unix)]
        {
            let term = async {
                match self.term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let int = async {
                match self.int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            tokio::select! {
                _ = term => {}
                _ = int => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
