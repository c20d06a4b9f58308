//! Sans-IO decoder of MJPEG streams in `multipart/x-mixed-replace` form.
//!
//! Accepts both what HTTP cameras send (ustreamer, mjpg-streamer, IP cameras: an HTTP
//! response whose `Content-Type` names the boundary) and the bare part stream of
//! GStreamer's `multipartmux` over `tcpserversink` (the boundary is learnt from the first
//! `--token` line). Parts with `Content-Length` are cut by length and checked against the
//! next boundary; parts without it are cut at the next boundary.
//!
//! Call order: `handle_bytes` with what was read, then `poll_part` until `None`.
//! Memory is bounded: the buffer never holds more than `frame_bytes_max` plus one header
//! block; anything larger is skipped as it arrives and reported as an error.

/// Longest block of part (or HTTP response) headers.
const HEADERS_BYTES_MAX: usize = 8 * 1024;
/// RFC 2046: boundaries are at most 70 characters.
const BOUNDARY_LEN_MAX: usize = 70;

/// One result of the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// The body of one part (normally a JPEG; not checked here).
    Frame(Vec<u8>),
    /// Something was skipped; the stream goes on.
    Error(StreamError),
}

/// What was wrong with the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("HTTP response is not 200 OK: {0}")]
    HttpStatus(String),
    #[error("HTTP response is not multipart (Content-Type: {0})")]
    NotMultipart(String),
    #[error("part headers longer than {HEADERS_BYTES_MAX} bytes")]
    HeadersTooLong,
    #[error("part of {bytes} bytes is above camera.frame_bytes_max ({bytes_max}); skipped")]
    PartTooLarge { bytes: usize, bytes_max: usize },
    #[error("part cut short: the next boundary came after {bytes} of {declared} bytes")]
    Truncated { bytes: usize, declared: usize },
    #[error("{bytes} bytes of garbage before the next boundary")]
    Resync { bytes: usize },
    #[error("invalid Content-Length `{0}`")]
    BadContentLength(String),
    #[error("zero-length part")]
    ZeroLength,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing seen yet: an HTTP response or a first boundary.
    Start,
    /// Looking for the next `--boundary` line.
    Seek { started: bool },
    /// After a boundary line: reading headers.
    Headers,
    /// Reading a body of known length.
    Body { length: usize },
    /// Reading a body up to the next boundary.
    BodyToBoundary,
    /// Dropping `remaining` bytes of an oversized part.
    Discard { remaining: usize },
    /// The stream said it ended (`--boundary--`) or cannot be read.
    Ended,
}

/// The decoder. See the module documentation for the call order.
#[derive(Debug)]
pub struct MultipartDecoder {
    buf: Vec<u8>,
    /// `\r\n--token`: the delimiter as it appears before every boundary but the first.
    delimiter: Option<Vec<u8>>,
    state: State,
    frame_bytes_max: usize,
    /// Where the next search for the delimiter starts in `buf`.
    scan_from: usize,
}

impl MultipartDecoder {
    pub fn new(frame_bytes_max: usize) -> MultipartDecoder {
        MultipartDecoder {
            buf: Vec::new(),
            delimiter: None,
            state: State::Start,
            frame_bytes_max,
            scan_from: 0,
        }
    }

    /// True once the stream ended (closing boundary or an HTTP error).
    pub fn ended(&self) -> bool {
        self.state == State::Ended
    }

    /// Takes bytes read from the source.
    pub fn handle_bytes(&mut self, mut data: &[u8]) {
        if let State::Discard { remaining } = self.state {
            let n = remaining.min(data.len());
            data = data.get(n..).unwrap_or_default();
            self.state = if remaining > n {
                State::Discard {
                    remaining: remaining - n,
                }
            } else {
                State::Seek { started: true }
            };
        }
        if self.state == State::Ended {
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next frame or error, or `None` when more bytes are needed.
    pub fn poll_part(&mut self) -> Option<Part> {
        loop {
            match self.state {
                State::Ended | State::Discard { .. } => return None,
                State::Start => {
                    if self.buf.len() < 5 {
                        return None;
                    }
                    if self.buf.starts_with(b"HTTP/") {
                        return self.http_response();
                    }
                    self.state = State::Seek { started: false };
                }
                State::Seek { started } => match self.seek(started) {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(error) => return Some(Part::Error(error)),
                },
                State::Headers => match self.headers() {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(error) => return Some(Part::Error(error)),
                },
                State::Body { length } => {
                    if let Some(part) = self.body_by_length(length) {
                        return Some(part);
                    }
                    if matches!(self.state, State::Body { .. }) {
                        return None;
                    }
                }
                State::BodyToBoundary => return self.body_to_boundary(),
            }
        }
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.drain(..n);
        self.scan_from = 0;
    }

    fn http_response(&mut self) -> Option<Part> {
        let Some(end) = find(&self.buf, b"\r\n\r\n", 0) else {
            if self.buf.len() > HEADERS_BYTES_MAX {
                self.state = State::Ended;
                return Some(Part::Error(StreamError::HeadersTooLong));
            }
            return None;
        };
        let text = String::from_utf8_lossy(self.buf.get(..end).unwrap_or_default()).into_owned();
        self.consume(end + 4);
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or_default().to_owned();
        if status.split_whitespace().nth(1) != Some("200") {
            self.state = State::Ended;
            return Some(Part::Error(StreamError::HttpStatus(status)));
        }
        let content_type = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        if !content_type.to_ascii_lowercase().starts_with("multipart/") {
            self.state = State::Ended;
            return Some(Part::Error(StreamError::NotMultipart(content_type)));
        }
        let boundary = content_type.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_owned())
        });
        if let Some(b) = boundary {
            // Some servers (mjpg-streamer among them) repeat the leading dashes here.
            let token = b.strip_prefix("--").unwrap_or(&b);
            if !token.is_empty() && token.len() <= BOUNDARY_LEN_MAX {
                self.delimiter = Some(format!("\r\n--{token}").into_bytes());
            }
        }
        self.state = State::Seek { started: false };
        self.poll_part()
    }

    /// Finds the next boundary line; learns the boundary from the first one if needed.
    fn seek(&mut self, started: bool) -> Result<bool, StreamError> {
        // Parts usually end with CRLF before the delimiter; skip blank lines.
        let blank = self
            .buf
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        let delimiter = match &self.delimiter {
            Some(d) => d.clone(),
            None => {
                // Learn `--token` from the first line that starts with two dashes.
                let at = if self.buf.get(blank..blank + 2) == Some(b"--") {
                    Some(blank)
                } else {
                    find(&self.buf, b"\n--", 0).map(|i| i + 1)
                };
                let Some(at) = at else {
                    self.drop_garbage_keeping(2, started)?;
                    return Ok(false);
                };
                let Some(eol) = find(&self.buf, b"\r\n", at) else {
                    if self.buf.len() - at > BOUNDARY_LEN_MAX + 4 {
                        self.consume(at + 2);
                    }
                    return Ok(false);
                };
                let token = self.buf.get(at + 2..eol).unwrap_or_default();
                if token.is_empty()
                    || token.len() > BOUNDARY_LEN_MAX
                    || !token.iter().all(|b| b.is_ascii_graphic() || *b == b' ')
                {
                    self.consume(at + 2);
                    return Ok(true);
                }
                let mut d = b"\r\n--".to_vec();
                d.extend_from_slice(token);
                self.delimiter = Some(d.clone());
                d
            }
        };
        let dashes = delimiter.get(2..).unwrap_or_default();
        // The boundary either starts the buffer (after blank lines) or follows a CRLF.
        let at = if self.buf.get(blank..blank + dashes.len()) == Some(dashes) {
            Some(blank)
        } else {
            find(&self.buf, &delimiter, 0).map(|i| i + 2)
        };
        let Some(at) = at else {
            self.drop_garbage_keeping(delimiter.len(), started)?;
            return Ok(false);
        };
        let after = at + dashes.len();
        // Need the rest of the boundary line: `--` (end) or CRLF.
        let Some(tail) = self.buf.get(after..after + 2) else {
            return Ok(false);
        };
        if tail == b"--" {
            self.state = State::Ended;
            return Ok(false);
        }
        let skipped = self.buf.get(..at).map_or(0, |b| {
            b.iter().filter(|c| !matches!(c, b'\r' | b'\n')).count()
        });
        let Some(eol) = find(&self.buf, b"\r\n", after) else {
            return Ok(false);
        };
        // Anything but spaces after the boundary on its line means a different token
        // (e.g. `--abc` matched inside `--abcdef`): not a boundary.
        if self
            .buf
            .get(after..eol)
            .is_some_and(|rest| rest.iter().any(|b| *b != b' ' && *b != b'\t'))
        {
            self.consume(after);
            return Ok(true);
        }
        self.consume(eol + 2);
        self.state = State::Headers;
        if started && skipped > 0 {
            return Err(StreamError::Resync { bytes: skipped });
        }
        Ok(true)
    }

    /// Drops bytes that cannot start a boundary, keeping a tail that might.
    fn drop_garbage_keeping(&mut self, keep: usize, started: bool) -> Result<(), StreamError> {
        let limit = self.frame_bytes_max.max(HEADERS_BYTES_MAX);
        if self.buf.len() > limit {
            let drop = self.buf.len() - keep;
            self.consume(drop);
            if started {
                return Err(StreamError::Resync { bytes: drop });
            }
        }
        Ok(())
    }

    fn headers(&mut self) -> Result<bool, StreamError> {
        // A part with no headers at all starts directly with the blank line.
        let end = if self.buf.starts_with(b"\r\n") {
            Some(0)
        } else {
            find(&self.buf, b"\r\n\r\n", 0).map(|i| i + 2)
        };
        let Some(end) = end else {
            if self.buf.len() > HEADERS_BYTES_MAX {
                self.consume(self.buf.len());
                self.state = State::Seek { started: true };
                return Err(StreamError::HeadersTooLong);
            }
            return Ok(false);
        };
        if end > HEADERS_BYTES_MAX {
            self.consume(end + 2);
            self.state = State::Seek { started: true };
            return Err(StreamError::HeadersTooLong);
        }
        let text = String::from_utf8_lossy(self.buf.get(..end).unwrap_or_default()).into_owned();
        self.consume(end + 2);
        let length = text
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim().to_owned());
        match length {
            None => self.state = State::BodyToBoundary,
            Some(value) => match value.parse::<usize>() {
                Ok(0) => {
                    self.state = State::Seek { started: true };
                    return Err(StreamError::ZeroLength);
                }
                Ok(n) if n > self.frame_bytes_max => {
                    let have = n.min(self.buf.len());
                    self.consume(have);
                    self.state = if n > have {
                        State::Discard {
                            remaining: n - have,
                        }
                    } else {
                        State::Seek { started: true }
                    };
                    return Err(StreamError::PartTooLarge {
                        bytes: n,
                        bytes_max: self.frame_bytes_max,
                    });
                }
                Ok(n) => self.state = State::Body { length: n },
                Err(_) => {
                    self.state = State::Seek { started: true };
                    return Err(StreamError::BadContentLength(value));
                }
            },
        }
        Ok(true)
    }

    fn body_by_length(&mut self, length: usize) -> Option<Part> {
        // A boundary inside the declared length means the part was cut short: report it
        // and continue from that boundary instead of swallowing the next frame.
        if let Some(delimiter) = &self.delimiter {
            let end = self.buf.len().min(length);
            let from = self.scan_from.min(end);
            if let Some(at) = find(self.buf.get(..end).unwrap_or_default(), delimiter, from) {
                self.consume(at);
                self.state = State::Seek { started: true };
                return Some(Part::Error(StreamError::Truncated {
                    bytes: at,
                    declared: length,
                }));
            }
            self.scan_from = end.saturating_sub(delimiter.len());
        }
        if self.buf.len() < length {
            return None;
        }
        let rest = self.buf.split_off(length);
        let body = std::mem::replace(&mut self.buf, rest);
        self.scan_from = 0;
        self.state = State::Seek { started: true };
        Some(Part::Frame(body))
    }

    fn body_to_boundary(&mut self) -> Option<Part> {
        let delimiter = self.delimiter.clone()?;
        match find(&self.buf, &delimiter, self.scan_from) {
            Some(at) => {
                let rest = self.buf.split_off(at);
                let body = std::mem::replace(&mut self.buf, rest);
                self.scan_from = 0;
                self.state = State::Seek { started: true };
                if body.is_empty() {
                    return Some(Part::Error(StreamError::ZeroLength));
                }
                Some(Part::Frame(body))
            }
            None if self.buf.len() > self.frame_bytes_max => {
                let bytes = self.buf.len();
                let keep = delimiter.len();
                self.consume(bytes - keep);
                self.state = State::Seek { started: true };
                Some(Part::Error(StreamError::PartTooLarge {
                    bytes,
                    bytes_max: self.frame_bytes_max,
                }))
            }
            None => {
                self.scan_from = self.buf.len().saturating_sub(delimiter.len());
                None
            }
        }
    }
}

/// First position of `needle` in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(boundary: &str, body: &[u8], with_length: bool) -> Vec<u8> {
        let mut out = format!("--{boundary}\r\nContent-Type: image/jpeg\r\n").into_bytes();
        if with_length {
            out.extend(format!("Content-Length: {}\r\n", body.len()).into_bytes());
        }
        out.extend(b"\r\n");
        out.extend(body);
        out.extend(b"\r\n");
        out
    }

    fn drain(decoder: &mut MultipartDecoder) -> Vec<Part> {
        std::iter::from_fn(|| decoder.poll_part()).collect()
    }

    fn feed_in_chunks(stream: &[u8], chunk: usize, frame_bytes_max: usize) -> Vec<Part> {
        let mut decoder = MultipartDecoder::new(frame_bytes_max);
        let mut parts = Vec::new();
        for piece in stream.chunks(chunk) {
            decoder.handle_bytes(piece);
            parts.extend(drain(&mut decoder));
        }
        parts
    }

    #[test]
    fn gstreamer_multipartmux_stream_in_any_chunking() {
        let mut stream = Vec::new();
        for i in 0..3u8 {
            stream.extend(part("ThisRandomString", &[0xFF, 0xD8, i, 0xFF, 0xD9], true));
        }
        for chunk in [1, 3, 7, 64, 4096] {
            let parts = feed_in_chunks(&stream, chunk, 1000);
            assert_eq!(
                parts,
                (0..3u8)
                    .map(|i| Part::Frame(vec![0xFF, 0xD8, i, 0xFF, 0xD9]))
                    .collect::<Vec<_>>(),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn http_camera_stream_without_content_length() {
        let mut stream = b"HTTP/1.0 200 OK\r\nServer: x\r\nContent-Type: multipart/x-mixed-replace;boundary=boundarydonotcross\r\n\r\n".to_vec();
        stream.extend(part("boundarydonotcross", b"frame-one", false));
        stream.extend(part("boundarydonotcross", b"frame-two", false));
        stream.extend(b"--boundarydonotcross\r\n");
        let parts = feed_in_chunks(&stream, 5, 1000);
        assert_eq!(
            parts,
            vec![
                Part::Frame(b"frame-one".to_vec()),
                Part::Frame(b"frame-two".to_vec())
            ]
        );
    }

    #[test]
    fn http_errors_end_the_stream() {
        let mut d = MultipartDecoder::new(1000);
        d.handle_bytes(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(
            d.poll_part(),
            Some(Part::Error(StreamError::HttpStatus(_)))
        ));
        assert!(d.ended());
        let mut d = MultipartDecoder::new(1000);
        d.handle_bytes(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>");
        assert!(matches!(
            d.poll_part(),
            Some(Part::Error(StreamError::NotMultipart(_)))
        ));
    }

    #[test]
    fn truncated_part_and_broken_boundary_are_reported_and_skipped() {
        let b = "ThisRandomString";
        let mut stream = part(b, b"good-1", true);
        // A part that declares 100 bytes but is cut off by the next boundary after 4.
        stream.extend(format!("--{b}\r\nContent-Length: 100\r\n\r\nabcd\r\n").into_bytes());
        stream.extend(part(b, b"good-2", true));
        // A truncated boundary line, then garbage, then a good part.
        stream.extend(b"--ThisRandomStr\r\ngarbage garbage\r\n");
        stream.extend(part(b, b"good-3", true));
        let parts = feed_in_chunks(&stream, 11, 1000);
        let frames: Vec<&Part> = parts
            .iter()
            .filter(|p| matches!(p, Part::Frame(_)))
            .collect();
        assert_eq!(
            frames,
            vec![
                &Part::Frame(b"good-1".to_vec()),
                &Part::Frame(b"good-2".to_vec()),
                &Part::Frame(b"good-3".to_vec())
            ]
        );
        assert!(
            parts
                .iter()
                .any(|p| matches!(p, Part::Error(StreamError::Truncated { .. }))),
            "{parts:?}"
        );
        assert!(
            parts
                .iter()
                .any(|p| matches!(p, Part::Error(StreamError::Resync { .. }))),
            "{parts:?}"
        );
    }

    #[test]
    fn oversized_and_zero_length_parts_are_skipped_without_buffering_them() {
        let b = "xyz";
        let mut decoder = MultipartDecoder::new(100);
        decoder.handle_bytes(&part(b, b"ok", true));
        assert_eq!(decoder.poll_part(), Some(Part::Frame(b"ok".to_vec())));
        decoder.handle_bytes(format!("--{b}\r\nContent-Length: 50000000\r\n\r\n").as_bytes());
        assert!(matches!(
            decoder.poll_part(),
            Some(Part::Error(StreamError::PartTooLarge {
                bytes: 50_000_000,
                ..
            }))
        ));
        // 50 MB arrive; the buffer never holds them.
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..47 {
            decoder.handle_bytes(&chunk);
            assert_eq!(decoder.poll_part(), None);
            assert!(decoder.buf.len() <= 100 + HEADERS_BYTES_MAX);
        }
        decoder.handle_bytes(&vec![0u8; 50_000_000 - 47 * (1 << 20)]);
        decoder.handle_bytes(b"\r\n");
        decoder.handle_bytes(format!("--{b}\r\nContent-Length: 0\r\n\r\n\r\n").as_bytes());
        assert_eq!(
            decoder.poll_part(),
            Some(Part::Error(StreamError::ZeroLength))
        );
        decoder.handle_bytes(&part(b, b"after", true));
        assert_eq!(decoder.poll_part(), Some(Part::Frame(b"after".to_vec())));
        // Without Content-Length, a part that never ends is cut at the limit.
        let mut decoder = MultipartDecoder::new(100);
        decoder.handle_bytes(format!("--{b}\r\n\r\n").as_bytes());
        for _ in 0..100 {
            decoder.handle_bytes(&[7u8; 1000]);
            while let Some(part) = decoder.poll_part() {
                assert!(matches!(part, Part::Error(_)), "{part:?}");
            }
            assert!(decoder.buf.len() <= 1100 + HEADERS_BYTES_MAX);
        }
    }

    #[test]
    fn closing_boundary_ends_the_stream() {
        let mut stream = part("q", b"last", true);
        stream.extend(b"--q--\r\n");
        let mut decoder = MultipartDecoder::new(100);
        decoder.handle_bytes(&stream);
        assert_eq!(drain(&mut decoder), vec![Part::Frame(b"last".to_vec())]);
        assert!(decoder.ended());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..40)
        ) {
            let mut decoder = MultipartDecoder::new(512);
            decoder.handle_bytes(b"--b\r\n\r\n");
            for chunk in chunks {
                decoder.handle_bytes(&chunk);
                while decoder.poll_part().is_some() {}
                proptest::prop_assert!(decoder.buf.len() <= 512 + HEADERS_BYTES_MAX + 300);
            }
        }
    }
}
