//! Server-sent events over a byte stream: `event:` and `data:` lines, a blank line ending
//! each event (`\r\n` or `\n`), comments ignored.

use futures_core::Stream;
use futures_util::StreamExt;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field (empty if none).
    pub name: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// Splits what has arrived into complete events, keeping the rest for later.
#[derive(Debug, Default)]
pub struct Parser {
    buffer: Vec<u8>,
    name: String,
    data: Vec<String>,
}

impl Parser {
    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if !self.data.is_empty() || !self.name.is_empty() {
                    events.push(Event {
                        name: std::mem::take(&mut self.name),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => value.clone_into(&mut self.name),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        events
    }
}

/// The events of an HTTP response body.
pub fn events(
    response: reqwest::Response,
) -> impl Stream<Item = Result<Event, reqwest::Error>> + Send {
    let mut parser = Parser::default();
    response
        .bytes_stream()
        .map(move |chunk| chunk.map(|bytes| parser.feed(&bytes)))
        .flat_map(|result| {
            futures_util::stream::iter(match result {
                Ok(events) => events.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(err) => vec![Err(err)],
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_line_endings() {
        let mut p = Parser::default();
        assert!(p.feed(b"event: message_start\r\ndata: {\"a\"").is_empty());
        let got = p.feed(b":1}\r\n\r\n: keep-alive\n\ndata: x\ndata: y\n\n");
        assert_eq!(
            got,
            vec![
                Event {
                    name: "message_start".into(),
                    data: "{\"a\":1}".into()
                },
                Event {
                    name: String::new(),
                    data: "x\ny".into()
                }
            ]
        );
        assert_eq!(
            p.feed(b"data: [DONE]\n\n"),
            vec![Event {
                name: String::new(),
                data: "[DONE]".into()
            }]
        );
    }
}
