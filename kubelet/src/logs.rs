//! The CRI container log format and the filters of `kubectl logs`, without I/O on files.
//!
//! The runtime writes one record per line: `<RFC 3339 time> <stdout|stderr> <P|F> <content>`, where
//! `P` marks a part of a longer line and `F` the part that ends it. [`Filter`] turns records back
//! into the container's lines (parts joined, one `\n` per `F`), keeps those at or after `since`,
//! prefixes each with its time when asked, and stops after `limit_bytes`. [`tail_start`] finds where
//! the last N lines of a file begin, reading from its end.

use std::io::{self, Read, Seek, SeekFrom};

use jiff::Timestamp;

/// Which output of the container a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout = 0,
    /// Standard error.
    Stderr = 1,
}

/// One record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// The time as written (RFC 3339 with nanoseconds).
    pub time: &'a str,
    /// The time, parsed.
    pub timestamp: Timestamp,
    /// stdout or stderr.
    pub stream: Stream,
    /// Whether this is a part of a line that a later record of the same stream completes.
    pub partial: bool,
    /// The bytes of the line (or part), without a newline.
    pub content: &'a [u8],
}

/// Why a line is not a CRI log record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No space after the time.
    #[error("timestamp is not found")]
    NoTime,
    /// The time is not RFC 3339.
    #[error("unexpected timestamp format {0:?}")]
    BadTime(String),
    /// No space after the stream.
    #[error("stream type is not found")]
    NoStream,
    /// The stream is neither stdout nor stderr.
    #[error("unexpected stream type {0:?}")]
    BadStream(String),
    /// No space after the tag.
    #[error("log tag is not found")]
    NoTag,
}

fn split_word(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = line.iter().position(|b| *b == b' ')?;
    Some((&line[..i], &line[i + 1..]))
}

/// Parses one record: a line of the file without its newline.
pub fn parse(line: &[u8]) -> Result<Record<'_>, ParseError> {
    let (time, rest) = split_word(line).ok_or(ParseError::NoTime)?;
    let time = std::str::from_utf8(time)
        .map_err(|_| ParseError::BadTime(String::from_utf8_lossy(time).into_owned()))?;
    let timestamp: Timestamp = time
        .parse()
        .map_err(|_| ParseError::BadTime(time.to_string()))?;
    let (stream, rest) = split_word(rest).ok_or(ParseError::NoStream)?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => {
            return Err(ParseError::BadStream(
                String::from_utf8_lossy(other).into_owned(),
            ));
        }
    };
    let (tag, content) = split_word(rest).ok_or(ParseError::NoTag)?;
    // Tags are `:`-separated for forward compatibility; the first says partial or full.
    let partial = tag.split(|b| *b == b':').next() == Some(b"P");
    Ok(Record {
        time,
        timestamp,
        stream,
        partial,
        content,
    })
}

/// What a reader of the log wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Prefix every line with its time and a space.
    pub timestamps: bool,
    /// Only lines whose (first part's) time is at or after this.
    pub since: Option<Timestamp>,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

/// Whether more output may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    More,
    /// The byte limit is reached: nothing more will be written.
    Full,
}

/// A partial line of one stream, waiting for its end.
#[derive(Debug)]
struct Open {
    time: String,
    skip: bool,
    /// Whether the prefix and first bytes were written already (the line grew too long to hold).
    started: bool,
    buf: Vec<u8>,
}

/// The most bytes of one partial line held back before they are written anyway.
const MAX_PENDING: usize = 1 << 20;

/// Turns records into the lines a reader asked for.
#[derive(Debug)]
pub struct Filter {
    opts: Options,
    remaining: Option<u64>,
    open: [Option<Open>; 2],
}

impl Filter {
    /// A filter for `opts`.
    pub fn new(opts: Options) -> Filter {
        Filter {
            remaining: opts.limit_bytes,
            opts,
            open: [None, None],
        }
    }

    /// Whether the byte limit is reached.
    pub fn is_full(&self) -> bool {
        self.remaining == Some(0)
    }

    fn write(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Flow {
        match &mut self.remaining {
            None => out.extend_from_slice(bytes),
            Some(left) => {
                let n = bytes
                    .len()
                    .min(usize::try_from(*left).unwrap_or(usize::MAX));
                out.extend_from_slice(&bytes[..n]);
                *left -= n as u64;
            }
        }
        if self.is_full() {
            Flow::Full
        } else {
            Flow::More
        }
    }

    /// The held-back part of a line, with its time prefix when it is the line's start.
    fn held(&self, open: &mut Open) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(open.buf.len() + open.time.len() + 1);
        if !open.started && self.opts.timestamps {
            bytes.extend_from_slice(open.time.as_bytes());
            bytes.push(b' ');
        }
        open.started = true;
        bytes.append(&mut open.buf);
        bytes
    }

    /// Takes one record (a line of the file without its newline) and appends the output it
    /// completes to `out`. A line that is not a record is skipped and its error returned.
    pub fn push(&mut self, line: &[u8], out: &mut Vec<u8>) -> Result<Flow, ParseError> {
        if self.is_full() {
            return Ok(Flow::Full);
        }
        let r = parse(line)?;
        let i = r.stream as usize;
        let mut open = self.open[i].take().unwrap_or_else(|| Open {
            time: r.time.to_string(),
            skip: self.opts.since.is_some_and(|since| r.timestamp < since),
            started: false,
            buf: Vec::new(),
        });
        if open.skip {
            if r.partial {
                self.open[i] = Some(open);
            }
            return Ok(Flow::More);
        }
        open.buf.extend_from_slice(r.content);
        if !r.partial {
            open.buf.push(b'\n');
            let bytes = self.held(&mut open);
            return Ok(self.write(&bytes, out));
        }
        let flow = if open.buf.len() >= MAX_PENDING {
            let bytes = self.held(&mut open);
            self.write(&bytes, out)
        } else {
            Flow::More
        };
        self.open[i] = Some(open);
        Ok(flow)
    }

    /// Writes what is left of unfinished lines (without a newline): the end of the output.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Flow {
        for i in 0..self.open.len() {
            if let Some(mut open) = self.open[i].take()
                && !open.skip
                && !open.buf.is_empty()
                && !self.is_full()
            {
                let bytes = self.held(&mut open);
                self.write(&bytes, out);
            }
        }
        if self.is_full() {
            Flow::Full
        } else {
            Flow::More
        }
    }
}

/// How many bytes [`tail_start`] reads at a time.
const TAIL_CHUNK: u64 = 64 * 1024;
/// How much of a record's start [`tail_start`] keeps to read its tag.
const HEAD: usize = 256;

/// Whether a record (or its first bytes) ends a line.
fn ends_line(head: &[u8]) -> bool {
    parse(head).is_ok_and(|r| !r.partial)
}

/// The offset where the last `lines` complete lines of a CRI log begin (0: the whole file). Reads
/// backwards from the end. An unfinished record at the end (no newline yet) and partial records
/// after the last full one are not counted but follow the offset.
pub fn tail_start<R: Read + Seek>(r: &mut R, lines: u64) -> io::Result<u64> {
    let end = r.seek(SeekFrom::End(0))?;
    let mut pos = end;
    // The first bytes of the record that ends at `record_end` (its newline), as far as read.
    let mut head: Vec<u8> = Vec::new();
    let mut record_end: Option<u64> = None;
    let mut seen = 0u64;
    let mut chunk = vec![0u8; TAIL_CHUNK as usize];
    while pos > 0 {
        let size = TAIL_CHUNK.min(pos);
        pos -= size;
        r.seek(SeekFrom::Start(pos))?;
        let buf = &mut chunk[..size as usize];
        r.read_exact(buf)?;
        let mut right = buf.len();
        while let Some(i) = buf[..right].iter().rposition(|b| *b == b'\n') {
            let newline = pos + i as u64;
            if let Some(end) = record_end {
                let mut record = buf[i + 1..right].to_vec();
                record.append(&mut head);
                if ends_line(&record) {
                    seen += 1;
                    if seen > lines {
                        return Ok(end + 1);
                    }
                }
            }
            head.clear();
            record_end = Some(newline);
            right = i;
        }
        let mut front = buf[..right].to_vec();
        front.append(&mut head);
        front.truncate(HEAD);
        head = front;
    }
    if let Some(end) = record_end
        && ends_line(&head)
        && seen + 1 > lines
    {
        return Ok(end + 1);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const LOG: &str = "\
2024-01-02T03:04:05.000000001Z stdout F one
2024-01-02T03:04:06.5Z stderr F oops
2024-01-02T03:04:07Z stdout P tw
2024-01-02T03:04:08Z stdout F o
2024-01-02T03:04:09+01:00 stdout F three
";

    fn run(opts: Options, text: &str) -> String {
        let mut f = Filter::new(opts);
        let mut out = Vec::new();
        for line in text.lines() {
            let _ = f.push(line.as_bytes(), &mut out);
        }
        f.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn parses_records() {
        let r = parse(b"2024-01-02T03:04:05.123456789Z stderr P:x hello world").unwrap();
        assert_eq!(r.time, "2024-01-02T03:04:05.123456789Z");
        assert_eq!(r.timestamp, ts("2024-01-02T03:04:05.123456789Z"));
        assert_eq!((r.stream, r.partial), (Stream::Stderr, true));
        assert_eq!(r.content, b"hello world");
        assert_eq!(
            parse(b"2024-01-02T03:04:05Z stdout F ").unwrap().content,
            b""
        );
        assert_eq!(parse(b"junk"), Err(ParseError::NoTime));
        assert!(matches!(
            parse(b"x stdout F a"),
            Err(ParseError::BadTime(_))
        ));
        assert!(matches!(
            parse(b"2024-01-02T03:04:05Z stdin F a"),
            Err(ParseError::BadStream(_))
        ));
        assert_eq!(
            parse(b"2024-01-02T03:04:05Z stdout F"),
            Err(ParseError::NoTag)
        );
    }

    #[test]
    fn joins_partial_lines_and_keeps_stderr() {
        assert_eq!(run(Options::default(), LOG), "one\noops\ntwo\nthree\n");
        // A stderr line between the parts of a stdout line does not split it.
        let mixed = "\
2024-01-02T03:04:05Z stdout P ab
2024-01-02T03:04:06Z stderr F err
2024-01-02T03:04:07Z stdout P cd
2024-01-02T03:04:08Z stdout F ef
not a record
2024-01-02T03:04:09Z stdout P unfinished";
        assert_eq!(run(Options::default(), mixed), "err\nabcdef\nunfinished");
    }

    #[test]
    fn prefixes_timestamps_of_the_first_part() {
        let opts = Options {
            timestamps: true,
            ..Options::default()
        };
        assert_eq!(
            run(opts, LOG),
            "2024-01-02T03:04:05.000000001Z one\n2024-01-02T03:04:06.5Z oops\n2024-01-02T03:04:07Z two\n2024-01-02T03:04:09+01:00 three\n"
        );
    }

    #[test]
    fn keeps_lines_since_a_time() {
        let since = |t: &str| Options {
            since: Some(ts(t)),
            ..Options::default()
        };
        assert_eq!(run(since("2024-01-02T03:04:06.5Z"), LOG), "oops\ntwo\n");
        // A line counts from its first part; the +01:00 line is an hour earlier.
        assert_eq!(run(since("2024-01-02T03:04:07.5Z"), LOG), "");
        assert_eq!(run(since("2024-01-02T03:04:05.5Z"), LOG), "oops\ntwo\n");
        assert_eq!(
            run(since("2024-01-02T02:04:09Z"), LOG),
            "one\noops\ntwo\nthree\n"
        );
    }

    #[test]
    fn cuts_after_the_byte_limit() {
        let limit = |n| Options {
            limit_bytes: Some(n),
            timestamps: false,
            since: None,
        };
        assert_eq!(run(limit(6), LOG), "one\noo");
        assert_eq!(run(limit(4), LOG), "one\n");
        let mut f = Filter::new(limit(2));
        let mut out = Vec::new();
        assert_eq!(
            f.push(b"2024-01-02T03:04:05Z stdout F abc", &mut out),
            Ok(Flow::Full)
        );
        assert_eq!(
            f.push(b"2024-01-02T03:04:05Z stdout F abc", &mut out),
            Ok(Flow::Full)
        );
        assert_eq!(out, b"ab");
    }

    #[test]
    fn writes_overlong_partial_lines_without_holding_them() {
        let part = "x".repeat(MAX_PENDING);
        let mut f = Filter::new(Options {
            timestamps: true,
            ..Options::default()
        });
        let mut out = Vec::new();
        let line = format!("2024-01-02T03:04:05Z stdout P {part}");
        f.push(line.as_bytes(), &mut out).unwrap();
        assert_eq!(out.len(), "2024-01-02T03:04:05Z ".len() + MAX_PENDING);
        f.push(b"2024-01-02T03:04:06Z stdout F end", &mut out)
            .unwrap();
        assert!(out.ends_with(b"xend\n"));
        assert_eq!(out.iter().filter(|b| **b == b'Z').count(), 1);
    }

    fn tail(text: &str, n: u64) -> String {
        let mut c = Cursor::new(text.as_bytes().to_vec());
        let at = tail_start(&mut c, n).unwrap() as usize;
        run(Options::default(), &text[at..])
    }

    #[test]
    fn tails_lines_counting_joined_parts_once() {
        assert_eq!(tail(LOG, 0), "");
        assert_eq!(tail(LOG, 1), "three\n");
        assert_eq!(tail(LOG, 2), "two\nthree\n");
        assert_eq!(tail(LOG, 3), "oops\ntwo\nthree\n");
        assert_eq!(tail(LOG, 4), "one\noops\ntwo\nthree\n");
        assert_eq!(tail(LOG, 100), "one\noops\ntwo\nthree\n");
        assert_eq!(tail("", 3), "");
        // An unfinished record and trailing parts come after the offset.
        let open =
            format!("{LOG}2024-01-02T03:04:10Z stdout P fou\n2024-01-02T03:04:10Z stdout F r");
        let mut c = Cursor::new(open.as_bytes().to_vec());
        assert_eq!(tail_start(&mut c, 0).unwrap() as usize, LOG.len());
        assert_eq!(tail(&open, 1), "three\nfour\n");
    }

    #[test]
    fn tails_across_read_chunks() {
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!("2024-01-02T03:04:05Z stdout P {i}-\n"));
            text.push_str(&format!(
                "2024-01-02T03:04:05Z stdout F {}\n",
                "y".repeat(i % 50)
            ));
        }
        assert!(text.len() as u64 > 3 * TAIL_CHUNK);
        let out = tail(&text, 1200);
        assert_eq!(out.lines().count(), 1200);
        assert!(out.starts_with("3800-"), "{}", &out[..20]);
        assert_eq!(tail(&text, 5000).lines().count(), 5000);
    }
}
