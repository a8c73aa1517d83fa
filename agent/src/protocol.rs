//! Protocol messages exchanged between the host client and the guest agent.
//!
//! Every frame carries a request id so that many requests share one connection;
//! see `agent/PROTOCOL.md` for the wire layout and the message flow.

use serde::{Deserialize, Serialize};

/// Protocol version spoken by this build. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame (the encoded message, without the 4-byte length prefix).
pub const MAX_FRAME_LEN: usize = 1024 * 1024;

/// Size of the data chunks (stdout, stdin, file contents) sent in one frame.
pub const CHUNK_LEN: usize = 64 * 1024;

/// Default vsock port the agent listens on in the guest.
pub const DEFAULT_VSOCK_PORT: u32 = 10_700;

/// Request id 0 is reserved for the handshake.
pub const HANDSHAKE_ID: u64 = 0;

/// A frame sent by the host client to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Request this frame belongs to (chosen by the client, unique per connection).
    pub id: u64,
    /// The message.
    pub msg: ClientMsg,
}

/// A frame sent by the agent to the host client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerFrame {
    /// Request this frame answers.
    pub id: u64,
    /// The message.
    pub msg: ServerMsg,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Executed directly, `argv[0]` looked up in `PATH`.
    Argv(Vec<String>),
    /// Run as `/bin/sh -c STRING`.
    Shell(String),
}

/// A command to execute in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments, or a shell string.
    pub command: Command,
    /// Extra environment variables (added to the agent's environment).
    pub env: Vec<(String, String)>,
    /// Start from an empty environment instead of the agent's.
    pub clear_env: bool,
    /// Working directory; the agent's own when `None`.
    pub cwd: Option<String>,
    /// Whether the client will stream stdin; when false stdin is `/dev/null`.
    pub stdin: bool,
    /// Kill the whole process group after this many milliseconds.
    pub timeout_ms: Option<u64>,
}

/// Messages from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First frame of a connection (id 0).
    Hello {
        /// Protocol version of the client.
        version: u32,
    },
    /// Start a process; answered by `Started`, output and `Exited`.
    Exec(ExecRequest),
    /// A chunk of stdin for a running exec.
    Stdin(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Close the stdin of a running exec.
    StdinEof,
    /// Kill the process group of a running exec.
    Kill,
    /// Start writing a file; followed by `PutData` frames and `PutEnd`.
    PutBegin {
        /// Destination path in the guest.
        path: String,
        /// Permission bits of the new file.
        mode: u32,
    },
    /// A chunk of the file being written.
    PutData(#[serde(with = "serde_bytes")] Vec<u8>),
    /// End of the file; the agent checks the BLAKE3 hash before renaming into place.
    PutEnd {
        /// BLAKE3 of the whole content.
        hash: [u8; 32],
    },
    /// Read a file; answered by `GetBegin`, `GetData`..., `GetEnd`.
    Get {
        /// Path in the guest.
        path: String,
    },
    /// Metadata of a path (not following a final symlink).
    Stat {
        /// Path in the guest.
        path: String,
    },
    /// Entries of a directory.
    List {
        /// Directory in the guest.
        path: String,
    },
    /// `systemctl is-active UNIT`.
    IsUnitActive {
        /// Unit name.
        unit: String,
    },
    /// Whether some socket listens on this TCP port (IPv4 or IPv6).
    IsPortOpen {
        /// Port number.
        port: u16,
    },
    /// Whether a path exists.
    FileExists {
        /// Path in the guest.
        path: String,
    },
    /// Guest hostname.
    Hostname,
    /// Time since boot.
    Uptime,
    /// sync(2).
    Sync,
    /// Power the guest off (answered `Ok` before acting).
    Poweroff,
    /// Reboot the guest (answered `Ok` before acting).
    Reboot,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// Normal exit with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// Shell-style code: the exit code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match *self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    /// True for `Code(0)`.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Code(0)
    }
}

/// Kind of a filesystem object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else (device, fifo, socket).
    Other,
}

/// Metadata of a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Kind.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// File name (lossy UTF-8).
    pub name: String,
    /// Metadata (not following symlinks).
    pub stat: FileStat,
}

/// Category of an error reported by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Path or program not found.
    NotFound,
    /// Permission denied.
    PermissionDenied,
    /// Bad request (wrong message order, bad argument).
    InvalidRequest,
    /// Integrity check failed.
    HashMismatch,
    /// Protocol version not supported.
    UnsupportedVersion,
    /// Any other I/O or system error.
    Io,
}

/// Messages from the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// Answer to `Hello`.
    Hello {
        /// Protocol version of the agent.
        version: u32,
        /// Agent build version (crate version).
        agent_version: String,
        /// Guest hostname.
        hostname: String,
    },
    /// The process was started.
    Started {
        /// Its pid (also its process group id).
        pid: u32,
    },
    /// A chunk of stdout.
    Stdout(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A chunk of stderr.
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The process ended; last frame of an exec.
    Exited {
        /// Exit code or signal.
        status: ExitStatus,
        /// Whether the agent killed it because of the timeout.
        timed_out: bool,
    },
    /// The file was written and its hash verified.
    PutDone {
        /// Bytes written.
        size: u64,
    },
    /// Start of a file read.
    GetBegin {
        /// Size at open time.
        size: u64,
        /// Permission bits.
        mode: u32,
    },
    /// A chunk of the file.
    GetData(#[serde(with = "serde_bytes")] Vec<u8>),
    /// End of the file with the BLAKE3 of everything sent.
    GetEnd {
        /// BLAKE3 of the content.
        hash: [u8; 32],
    },
    /// Answer to `Stat`.
    Stat(FileStat),
    /// Answer to `List`, sorted by name.
    List(Vec<DirEntry>),
    /// Answer to `IsUnitActive`.
    UnitState {
        /// Whether the unit is active.
        active: bool,
        /// The state printed by `systemctl is-active`.
        state: String,
    },
    /// Answer to `IsPortOpen` and `FileExists`.
    Bool(bool),
    /// Answer to `Hostname`.
    Hostname(String),
    /// Answer to `Uptime`: milliseconds since boot.
    Uptime(u64),
    /// Success without data (`Sync`, `Poweroff`, `Reboot`).
    Ok,
    /// The request failed; last frame of that request.
    Error {
        /// Category.
        kind: ErrorKind,
        /// Human-readable message.
        message: String,
    },
}

impl ExecRequest {
    /// Runs `argv` directly (no shell), inheriting the agent's environment.
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(Command::Argv(argv.into_iter().map(Into::into).collect()))
    }

    /// Runs `script` with `/bin/sh -c`.
    pub fn shell(script: impl Into<String>) -> Self {
        Self::new(Command::Shell(script.into()))
    }

    fn new(command: Command) -> Self {
        ExecRequest {
            command,
            env: Vec::new(),
            clear_env: false,
            cwd: None,
            stdin: false,
            timeout_ms: None,
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts from an empty environment (only the variables added with [`Self::env`]).
    pub fn clear_env(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// The client will stream stdin (otherwise stdin is `/dev/null`).
    pub fn with_stdin(mut self) -> Self {
        self.stdin = true;
        self
    }

    /// Kills the whole process group after `timeout`.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout_ms = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        self
    }
}
