//! `rsiscsi nbd`: one LUN served over NBD to qemu, qemu-img, nbdcopy,
//! nbdfuse or nbd-client, until SIGINT or SIGTERM; then the LUN is flushed
//! and the session logged out.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use rsiscsi_nbd::{Export, ExportConfig, Listener, LunDevice};

use crate::cli::{Common, McsArgs, SessionArgs};
use crate::commands::{CmdError, CmdResult, Signals, check_disk, login, logout, lun_url, session_config};

/// The port NBD clients use when none is given (IANA, the NBD protocol).
const NBD_PORT: u16 = 10809;

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("where").required(true).args(["nbd_socket", "listen"]))]
pub struct NbdArgs {
    /// iscsi://HOST[:PORT]/IQN/LUN of the disk to serve.
    pub url: String,
    /// Serve on this Unix socket, created private to its owner (mode 0600); clients use
    /// nbd+unix:///?socket=PATH.
    // Its own id: `socket` is the service's socket among the connection options.
    #[arg(long = "socket", id = "nbd_socket", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Serve on TCP instead: PORT (on 127.0.0.1), HOST or HOST:PORT (port 10809 by default);
    /// clients use nbd://HOST:PORT. Anyone who can reach it can read (and write) the LUN.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Export the LUN read-only: clients' writes, trims and zeroing fail with EPERM.
    #[arg(long)]
    pub read_only: bool,
    /// Name of the export (clients may also ask for the empty name); default IQN/LUN.
    #[arg(long, value_name = "NAME")]
    pub export_name: Option<String>,
    /// Most NBD clients served at once (nbdcopy opens 4 by default; a further client is refused).
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_clients: u16,
    #[command(flatten)]
    pub mcs: McsArgs,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// Requests of one client started before its replies are read back: enough
/// to keep the session's command window full (the window, not this, limits
/// what goes to the target).
const IN_FLIGHT_PER_CLIENT: usize = 64;

/// `PORT`, `HOST`, `HOST:PORT`, `[V6]:PORT`: the address to listen on.
pub(crate) fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let with_port = if s.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !s.ends_with(']') {
        s.to_string()
    } else {
        format!("{s}:{NBD_PORT}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("--listen {s}: {e}"))?
        .next()
        .ok_or_else(|| format!("--listen {s}: the name has no address"))
}

async fn listener(args: &NbdArgs) -> CmdResult<(Listener, String, Option<nbd_export::UnixSocketGuard>)> {
    if let Some(path) = &args.socket {
        let (l, guard) = nbd_export::bind_unix_guarded(path).map_err(|e| CmdError::from(e.to_string()))?;
        return Ok((Listener::Unix(l), format!("nbd+unix:///?socket={}", path.display()), Some(guard)));
    }
    let spec = args.listen.as_deref().unwrap_or_default();
    let addr = listen_addr(spec)?;
    let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let addr = l.local_addr().unwrap_or(addr);
    Ok((Listener::Tcp(l), format!("nbd://{addr}"), None))
}

pub(crate) async fn run(common: &Common, args: &NbdArgs) -> CmdResult {
    let mut signals = Signals::listen()?;
    let (u, target, lun) = lun_url(&args.url)?;
    // The listening socket first: a path or port that cannot be used is
    // reported before any login.
    let (listener, uri, _guard) = listener(args).await?;
    let cfg = session_config(common, Some(&u), &args.session)?;
    let s = tokio::select! {
        r = login(&u, &target, cfg, &args.mcs) => r?,
        stop = signals.recv() => return Err(CmdError::Interrupted {
            message: "interrupted before the export started".into(),
            status: stop.status(),
        }),
    };
    if let Err(err) = check_disk(&s, &target, lun).await {
        logout(&s).await;
        return Err(err);
    }
    let device = match LunDevice::open(s.clone(), lun, args.read_only).await {
        Ok(d) => Arc::new(d),
        Err(err) => {
            logout(&s).await;
            return Err(err.to_string().into());
        }
    };
    let config = ExportConfig {
        name: args.export_name.clone().unwrap_or_else(|| format!("{target}/{lun}")),
        description: format!("LUN {lun} of {target} at {}", u.portal),
        read_only: args.read_only,
        max_clients: usize::from(args.max_clients),
        max_in_flight: IN_FLIGHT_PER_CLIENT,
    };
    let cap = device.capacity();
    eprintln!(
        "rsiscsi: serving LUN {lun} of {target} ({} bytes{}) at {uri} until SIGINT or SIGTERM",
        cap.bytes(),
        if args.read_only { ", read-only" } else { "" }
    );
    let export = Export::start(device, config, listener);
    let stop = signals.recv().await;
    tracing::info!("{stop:?}: stopping the export");
    // A second signal gives up waiting for the requests in flight and the
    // flush.
    let served = tokio::select! {
        r = export.stop() => Some(r),
        _ = signals.recv() => None,
    };
    logout(&s).await;
    match served {
        Some(Ok(stats)) => {
            tracing::info!(clients = stats.clients_served, requests = stats.requests, "NBD export ended");
            Ok(())
        }
        Some(Err(err)) => Err(err.to_string().into()),
        None => Err(CmdError::Interrupted {
            message: "interrupted again while the export was stopping: the LUN was not flushed".into(),
            status: stop.status(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(listen_addr("10810"), Ok("127.0.0.1:10810".parse().unwrap()));
        assert_eq!(listen_addr("127.0.0.1:10811"), Ok("127.0.0.1:10811".parse().unwrap()));
        assert_eq!(listen_addr("[::1]:10812"), Ok("[::1]:10812".parse().unwrap()));
        assert_eq!(listen_addr("127.0.0.1"), Ok("127.0.0.1:10809".parse().unwrap()));
        assert_eq!(listen_addr("localhost:10813").map(|a| a.port()), Ok(10813));
        assert!(listen_addr("no such host.invalid").is_err());
    }
}
