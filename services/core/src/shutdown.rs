//! Signal handling: the first SIGTERM or Ctrl-C asks the process to drain
//! (stop taking work, finish or requeue what is in flight, exit); a second one
//! exits at once.

use tokio_util::sync::CancellationToken;

/// Exit code of a process forced down by a second signal.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Returns a token that is cancelled on the first SIGTERM/SIGINT. Spawns the
/// listener on the current Tokio runtime.
pub fn install_signal_handlers() -> CancellationToken {
    let token = CancellationToken::new();
    let drain = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; draining in-flight work (signal again to force)");
        drain.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal; exiting now");
        std::process::exit(FORCED_EXIT_CODE);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
