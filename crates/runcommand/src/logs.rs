//! Bounded capture of a command's output: the head and the tail are kept, the middle is
//! counted and replaced by one marker line.

use std::collections::VecDeque;

/// Collects output in at most `cap` bytes of memory, however much the command prints.
#[derive(Debug)]
pub struct LogBuffer {
    cap: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
}

impl LogBuffer {
    pub fn new(cap: usize) -> LogBuffer {
        LogBuffer {
            cap,
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
        }
    }

    fn head_cap(&self) -> usize {
        self.cap / 2
    }

    fn tail_cap(&self) -> usize {
        self.cap - self.head_cap()
    }

    pub fn push(&mut self, mut chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let room = self.head_cap().saturating_sub(self.head.len());
        let take = room.min(chunk.len());
        self.head.extend_from_slice(&chunk[..take]);
        chunk = &chunk[take..];
        let tail_cap = self.tail_cap();
        if chunk.len() >= tail_cap {
            self.tail.clear();
            self.tail.extend(&chunk[chunk.len() - tail_cap..]);
            return;
        }
        let overflow = (self.tail.len() + chunk.len()).saturating_sub(tail_cap);
        self.tail.drain(..overflow);
        self.tail.extend(chunk);
    }

    /// Bytes seen in total.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The captured text, at most `cap` bytes before invalid UTF-8 is replaced. When output
    /// was dropped, a marker line between head and tail says how many bytes.
    pub fn finish(self) -> String {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let tail: Vec<u8> = self.tail.into_iter().collect();
        if self.total == kept {
            let mut all = self.head;
            all.extend_from_slice(&tail);
            return String::from_utf8_lossy(&all).into_owned();
        }
        // The marker takes room of its own: shrink head and tail so the whole fits in `cap`.
        let marker_len = marker(self.total).len();
        let budget = self.cap.saturating_sub(marker_len);
        let mut head_len = (budget / 2).min(self.head.len());
        let mut tail_len = (budget - head_len).min(tail.len());
        // Cut on character boundaries so neither side ends in a broken UTF-8 sequence.
        while head_len > 0 && is_continuation(self.head.get(head_len).copied()) {
            head_len -= 1;
        }
        while tail_len > 0 && is_continuation(tail.get(tail.len() - tail_len).copied()) {
            tail_len -= 1;
        }
        let dropped = self.total - (head_len + tail_len) as u64;
        let mut out = String::from_utf8_lossy(&self.head[..head_len]).into_owned();
        out.push_str(&marker(dropped));
        out.push_str(&String::from_utf8_lossy(&tail[tail.len() - tail_len..]));
        out
    }
}

fn is_continuation(b: Option<u8>) -> bool {
    b.is_some_and(|b| b & 0xc0 == 0x80)
}

/// The line that replaces dropped output.
pub fn marker(dropped: u64) -> String {
    format!("\n[sandpool: {dropped} bytes of output dropped]\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut b = LogBuffer::new(100);
        b.push(b"hello ");
        b.push(b"world");
        assert_eq!(b.finish(), "hello world");
    }

    #[test]
    fn output_of_exactly_cap_is_kept_whole() {
        let mut b = LogBuffer::new(10);
        for c in b"0123456789" {
            b.push(&[*c]);
        }
        assert_eq!(b.finish(), "0123456789");
    }

    #[test]
    fn large_output_keeps_head_and_tail_with_count() {
        let cap = 200;
        let mut b = LogBuffer::new(cap);
        let data: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for piece in data.chunks(7) {
            b.push(piece);
        }
        let out = b.finish();
        assert!(out.len() <= cap, "{} > {cap}", out.len());
        let m_start = out.find("\n[sandpool: ").unwrap();
        let m_end = out[m_start + 1..].find('\n').unwrap() + m_start + 2;
        let head = &out[..m_start];
        let tail = &out[m_end..];
        assert!(data.starts_with(head.as_bytes()));
        assert!(data.ends_with(tail.as_bytes()));
        let dropped = data.len() - head.len() - tail.len();
        assert_eq!(&out[m_start..m_end], marker(dropped as u64));
        assert!(!head.is_empty() && !tail.is_empty());
    }

    #[test]
    fn cut_respects_utf8() {
        let mut b = LogBuffer::new(64);
        let text = "é".repeat(1000);
        b.push(text.as_bytes());
        let out = b.finish();
        assert!(!out.contains('\u{fffd}'), "{out}");
        assert!(out.starts_with('é') && out.ends_with('é'));
    }
}
