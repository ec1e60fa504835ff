//! The python-omemo reference peers from `tests/interop/` (`oldmemo_peer.py` for legacy
//! OMEMO, `twomemo_peer.py` for OMEMO 2), driven over JSON lines (protocol in
//! `tests/interop/PROTOCOL.md`). The venv comes from `scripts/setup-test-env`, which
//! `scripts/test` runs first.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use omemo::Version;
use serde_json::{Value, json};

/// A python-omemo peer process.
pub struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Peer {
    /// The oldmemo peer (legacy OMEMO).
    pub fn start() -> Self {
        Self::start_version(Version::Legacy)
    }

    /// The peer of `version`: oldmemo or twomemo.
    pub fn start_version(version: Version) -> Self {
        let script = match version {
            Version::Legacy => "oldmemo_peer.py",
            Version::Omemo2 => "twomemo_peer.py",
        };
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = root.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/setup-test-env (scripts/test does) to install the \
             python-omemo reference peer",
            python.display()
        );
        let mut child = Command::new(python)
            .arg(root.join("tests/interop").join(script))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    pub fn call(&mut self, request: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{request}").expect("write to peer");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read from peer");
        let response: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
        if response["ok"] == true {
            Ok(response)
        } else {
            Err(response["error"].as_str().unwrap_or("?").to_owned())
        }
    }

    pub fn ok(&mut self, request: Value) -> Value {
        let op = request["op"].clone();
        self.call(request)
            .unwrap_or_else(|e| panic!("peer {op}: {e}"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let _ = self.child.wait();
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(value: &Value) -> Vec<u8> {
    let s = value.as_str().expect("hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
