//! The loader's socket for the CNI plugin (`loader.sock` in the host's state directory, root
//! only): one JSON request line in, one JSON reply line out. Requests are handed to the
//! watcher's loop, which answers once the dataplane holds the change.
use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use dataplane::system::workloads::{Reply, Request};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::{debug, warn};

/// A request and where its reply goes.
pub type Pending = (Request, oneshot::Sender<Reply>);

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request line read: a request is a few hundred bytes; a client that sends more
/// is answered that it is no request, and holds no more memory than this.
const MAX_REQUEST: u64 = 4096;

/// Listens at `path` (replacing a socket a killed loader left) on the current runtime.
pub fn serve(path: &Path) -> std::io::Result<mpsc::Receiver<Pending>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, tx.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "the plugin socket failed to accept; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(rx)
}

async fn answer(stream: UnixStream, requests: mpsc::Sender<Pending>) {
    use tokio::io::AsyncReadExt;
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        BufReader::new(read.take(MAX_REQUEST)).read_line(&mut line),
    )
    .await;
    let reply = match read {
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
            Ok(request) => {
                debug!(?request, "plugin request");
                let (tx, rx) = oneshot::channel();
                if requests.send((request, tx)).await.is_err() {
                    return;
                }
                match rx.await {
                    Ok(reply) => reply,
                    Err(_) => return,
                }
            }
            Err(e) => Reply {
                ok: false,
                error: Some(format!("not a request: {e}")),
            },
        },
        _ => return,
    };
    let mut text = serde_json::to_string(&reply).expect("replies serialize");
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}
