//! A process's stdio: containerd's FIFOs on the shim side, pipes or a pty
//! on the container side, copied by small blocking threads.
//!
//! Pipes (not the FIFOs themselves) go to the container, as
//! containerd-shim-runc-v2 does: the shim decides when the container's
//! stdin reaches EOF (CloseIO, or containerd closing its end), and output
//! keeps flowing while containerd reconnects its FIFO readers.
//!
//! With a terminal, `cnfbox` sends the pty master over a console socket
//! (runc's `--console-socket` protocol: one SCM_RIGHTS message); the
//! master then takes the place of all three pipes.

use std::fs::{File, OpenOptions};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::sync::oneshot;

use crate::runtime::ContainerStdio;

/// Errors setting up a process's stdio.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("creating a pipe for the container's {stream}")]
    Pipe {
        stream: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("creating the console socket in {dir}")]
    ConsoleSocket {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the runtime sent no pty master on the console socket {path}")]
    NoConsole {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("receiving the pty master on the console socket {path}")]
    RecvConsole {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the console socket {path} carried no file descriptor")]
    NoFd { path: PathBuf },
    #[error("TIOCSWINSZ on the pty master ({width}x{height})")]
    Resize {
        width: u32,
        height: u32,
        #[source]
        source: nix::Error,
    },
    #[error("the process has no terminal")]
    NoTerminal,
}

/// containerd's FIFO paths for one process ("" = not connected).
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The shim side of a process's stdio.
#[derive(Default)]
pub struct ProcessIo {
    /// Where stdin data goes (pipe writer or pty master); `None` once closed.
    stdin: Arc<Mutex<Option<File>>>,
    /// The pty master, for resizing.
    console: Option<File>,
    /// Fire when an output stream is copied to its end.
    done: Vec<oneshot::Receiver<()>>,
}

fn pipe(stream: &'static str) -> Result<(OwnedFd, OwnedFd), IoError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|source| IoError::Pipe { stream, source })
}

/// Copies `from` into the FIFO at `path` until EOF (or EIO: a pty whose
/// last slave closed), then fires `done`.
fn copy_out(mut from: File, path: String, done: oneshot::Sender<()>) {
    std::thread::spawn(move || {
        // Blocks until containerd's reader is there, as a FIFO writer must.
        match OpenOptions::new().write(true).open(&path) {
            Ok(mut fifo) => {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if fifo.write_all(&buf[..n]).is_err() {
                                // The reader left: drain so the writer
                                // never blocks on a full pipe.
                                let _ = std::io::copy(&mut from, &mut std::io::sink());
                                break;
                            }
                        }
                    }
                }
            }
            Err(err) => {
                log::warn!("opening output FIFO {path}: {err}");
                let _ = std::io::copy(&mut from, &mut std::io::sink());
            }
        }
        let _ = done.send(());
    });
}

/// Copies the FIFO at `path` into the process's stdin until EOF, then
/// closes the stdin (unless CloseIO did first).
fn copy_in(path: String, to: Arc<Mutex<Option<File>>>, close_at_eof: bool) {
    std::thread::spawn(move || {
        let Ok(mut fifo) = File::open(&path) else {
            log::warn!("opening stdin FIFO {path}");
            return;
        };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match fifo.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut guard = to.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(w) = guard.as_mut() else { return };
                    if w.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        if close_at_eof {
            to.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    });
}

impl ProcessIo {
    /// Pipes for a process without a terminal; returns the container's ends.
    pub fn pipes(paths: &StdioPaths) -> Result<(Self, ContainerStdio), IoError> {
        let mut io = Self::default();
        let mut c = ContainerStdio::default();
        if !paths.stdin.is_empty() {
            let (r, w) = pipe("stdin")?;
            c.stdin = Some(r);
            *io.stdin.lock().unwrap_or_else(|p| p.into_inner()) = Some(File::from(w));
            copy_in(paths.stdin.clone(), io.stdin.clone(), true);
        }
        for (path, slot, stream) in [
            (&paths.stdout, &mut c.stdout, "stdout"),
            (&paths.stderr, &mut c.stderr, "stderr"),
        ] {
            if path.is_empty() {
                continue;
            }
            let (r, w) = pipe(stream)?;
            *slot = Some(w);
            let (tx, rx) = oneshot::channel();
            copy_out(File::from(r), path.clone(), tx);
            io.done.push(rx);
        }
        Ok((io, c))
    }

    /// Takes the pty master from `socket` (after the runtime sent it) and
    /// wires it to the FIFOs.
    pub fn console(socket: &ConsoleSocket, paths: &StdioPaths) -> Result<Self, IoError> {
        let master = socket.receive()?;
        let mut io = Self::default();
        if !paths.stdin.is_empty() {
            if let Ok(w) = master.try_clone() {
                *io.stdin.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
                // A terminal's stdin stays open at FIFO EOF: only CloseIO
                // (which containerd sends for `stdin_once`) ends it.
                copy_in(paths.stdin.clone(), io.stdin.clone(), false);
            }
        }
        if !paths.stdout.is_empty() {
            if let Ok(r) = master.try_clone() {
                let (tx, rx) = oneshot::channel();
                copy_out(r, paths.stdout.clone(), tx);
                io.done.push(rx);
            }
        }
        io.console = Some(master);
        Ok(io)
    }

    /// Closes the process's stdin (CloseIO).
    pub fn close_stdin(&self) {
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Sets the terminal size.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), IoError> {
        let master = self.console.as_ref().ok_or(IoError::NoTerminal)?;
        let ws = libc::winsize {
            ws_row: height.min(u16::MAX as u32) as u16,
            ws_col: width.min(u16::MAX as u32) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the valid pointer; the
        // fd is the open pty master owned by `master`.
        let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(IoError::Resize {
                width,
                height,
                source: nix::Error::last(),
            });
        }
        Ok(())
    }

    /// Waits until the output streams are copied out (the process and
    /// everything holding its stdout/stderr exited), at most `limit`:
    /// a daemon the process left behind may hold them open forever.
    pub async fn wait_output(&mut self, limit: std::time::Duration) {
        let all = futures_join(std::mem::take(&mut self.done));
        let _ = tokio::time::timeout(limit, all).await;
        // The pty master stays open for the copiers; drop ours.
        self.console = None;
    }
}

async fn futures_join(done: Vec<oneshot::Receiver<()>>) {
    for rx in done {
        let _ = rx.await;
    }
}

/// A listening console socket in a private temporary directory.
pub struct ConsoleSocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> Result<Self, IoError> {
        let tmp = std::env::temp_dir();
        let dir = tempfile::Builder::new()
            .prefix("cnfbox-pty-")
            .tempdir_in(&tmp)
            .map_err(|source| IoError::ConsoleSocket {
                dir: tmp.clone(),
                source,
            })?;
        let path = dir.path().join("pty.sock");
        let listener = UnixListener::bind(&path).map_err(|source| IoError::ConsoleSocket {
            dir: dir.path().to_owned(),
            source,
        })?;
        Ok(Self {
            _dir: dir,
            path,
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fd the runtime sent. Call after the runtime returned: the
    /// connection and its message wait in the socket's queues, so a
    /// missing one is an error rather than a hang.
    fn receive(&self) -> Result<File, IoError> {
        let no_console = |source| IoError::NoConsole {
            path: self.path.clone(),
            source,
        };
        self.listener.set_nonblocking(true).map_err(no_console)?;
        let (stream, _) = self.listener.accept().map_err(no_console)?;
        stream.set_nonblocking(false).map_err(no_console)?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|source| IoError::RecvConsole {
            path: self.path.clone(),
            source,
        })?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for cmsg in msg.cmsgs().map_err(|source| IoError::RecvConsole {
            path: self.path.clone(),
            source,
        })? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                for fd in raw {
                    // SAFETY: SCM_RIGHTS installed `fd` in this process just
                    // now; nothing else owns it.
                    fds.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
                }
            }
        }
        let mut fds = fds.into_iter();
        let master = fds.next().ok_or_else(|| IoError::NoFd {
            path: self.path.clone(),
        })?;
        Ok(File::from(master))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn console_socket_receives_the_fd() {
        let sock = ConsoleSocket::new().expect("socket");
        let stream = UnixStream::connect(sock.path()).expect("connect");
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let fds = [w.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(b"/dev/pts/0")];
        nix::sys::socket::sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
            .expect("sendmsg");
        drop(w);
        let mut got = sock.receive().expect("receive");
        got.write_all(b"hi").expect("write through received fd");
        drop(got);
        let mut s = String::new();
        File::from(r).read_to_string(&mut s).expect("read");
        assert_eq!(s, "hi");
    }

    #[test]
    fn missing_console_is_an_error_not_a_hang() {
        let sock = ConsoleSocket::new().expect("socket");
        let err = sock.receive().expect_err("nothing was sent");
        assert!(err.to_string().contains("sent no pty master"), "{err}");
    }

    #[tokio::test]
    async fn pipes_copy_output_and_close_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let inp = dir.path().join("in");
        for p in [&out, &inp] {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .expect("mkfifo");
        }
        let paths = StdioPaths {
            stdin: inp.display().to_string(),
            stdout: out.display().to_string(),
            ..Default::default()
        };
        let reader = std::thread::spawn({
            let out = out.clone();
            move || {
                let mut s = String::new();
                File::open(out)
                    .expect("open out")
                    .read_to_string(&mut s)
                    .expect("read");
                s
            }
        });
        let (mut io, c) = ProcessIo::pipes(&paths).expect("pipes");
        // The "container": echo stdin to stdout.
        let mut cin = File::from(c.stdin.expect("stdin"));
        let mut cout = File::from(c.stdout.expect("stdout"));
        let mut feeder = OpenOptions::new().write(true).open(&inp).expect("open in");
        feeder.write_all(b"ping").expect("feed");
        drop(feeder); // FIFO EOF closes the container's stdin
        let mut got = String::new();
        cin.read_to_string(&mut got)
            .expect("container reads stdin to EOF");
        cout.write_all(got.as_bytes()).expect("container writes");
        drop(cout);
        io.wait_output(std::time::Duration::from_secs(60)).await;
        assert_eq!(reader.join().expect("reader"), "ping");
    }
}
