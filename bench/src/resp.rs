//! A minimal RESP client for load generation: one request in flight per
//! connection, replies parsed only as far as needed to find their end and
//! whether they are errors. Keeps the load generator's own cost small and
//! the same for every command measured.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Encodes one command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub struct Conn {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    line: String,
    skip: Vec<u8>,
}

impl Conn {
    pub async fn connect(port: u16) -> std::io::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port)).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        Ok(Conn {
            rd: BufReader::with_capacity(64 * 1024, r),
            wr: w,
            line: String::new(),
            skip: Vec::new(),
        })
    }

    /// Sends one encoded command and reads its whole reply. The outer
    /// `Result` is the connection, the inner one the reply (`Err` holds the
    /// first error text in it).
    pub async fn call(&mut self, frame: &[u8]) -> std::io::Result<Result<(), String>> {
        self.wr.write_all(frame).await?;
        let mut pending = 1usize;
        let mut error = None;
        while pending > 0 {
            pending -= 1;
            self.line.clear();
            if self.rd.read_line(&mut self.line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = self.line.trim_end();
            let (kind, rest) = line.split_at(1.min(line.len()));
            let n = || -> std::io::Result<i64> {
                rest.parse()
                    .map_err(|_| std::io::Error::other(format!("bad RESP line {line:?}")))
            };
            match kind {
                "+" | ":" | "_" | "," | "#" => {}
                "-" => {
                    error.get_or_insert_with(|| rest.to_string());
                }
                "$" | "=" | "!" => {
                    let len = n()?;
                    if len >= 0 {
                        self.skip.resize(len as usize + 2, 0);
                        self.rd.read_exact(&mut self.skip).await?;
                    }
                }
                "*" | "~" | ">" => pending += n()?.max(0) as usize,
                "%" => pending += 2 * n()?.max(0) as usize,
                _ => return Err(std::io::Error::other(format!("bad RESP line {line:?}"))),
            }
        }
        Ok(error.map_or(Ok(()), Err))
    }
}
