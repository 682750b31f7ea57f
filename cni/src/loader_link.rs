//! Asking the host's loader through its socket (see `dataplane::system::workloads`).
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    time::Duration,
};

use dataplane::system::workloads::{HostDir, Reply, Request};

/// How long the loader may take to apply a change (it resolves the whole plan; a next hop
/// that does not answer ARP costs its timeout).
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// What came of a request.
pub enum Answer {
    Reply(Reply),
    /// No loader runs on this host (its socket is absent or refuses, or it went away before
    /// answering): the next one takes the records when it starts.
    NoLoader,
}

pub fn ask(host: &HostDir, request: &Request) -> Result<Answer, String> {
    let socket = host.socket();
    let mut stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(Answer::NoLoader);
        }
        Err(e) => return Err(format!("connecting to {}: {e}", socket.display())),
    };
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(request).expect("requests serialize");
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("writing to {}: {e}", socket.display()))?;
    let mut reply = String::new();
    let read = BufReader::new(stream).read_line(&mut reply).map_err(|e| {
        format!(
            "the loader did not answer within {} s: {e}",
            REPLY_TIMEOUT.as_secs()
        )
    })?;
    if read == 0 {
        // The loader went away before answering (stopped or killed): like no loader at all,
        // the records wait for the next one.
        return Ok(Answer::NoLoader);
    }
    serde_json::from_str(reply.trim())
        .map(Answer::Reply)
        .map_err(|e| format!("the loader's answer `{}` is not a reply: {e}", reply.trim()))
}
