//! Text from the ground made safe for a terminal or a log line, and bytes as hex (pure).
//!
//! The audit log, the e-stop and the link keys all write values a ground client chose;
//! they share this one rule (re-exported at `audit::escape`).

use std::borrow::Cow;

/// Whether a character must not reach a terminal or a log line as itself: control
/// characters (newline, carriage return, escape...), line and paragraph separators, and the
/// Unicode bidirectional controls that reorder what a reader sees (U+202E and friends,
/// "Trojan Source", CVE-2021-42574).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// Text with every [`is_unsafe_char`] written as `\u{...}` (`\n`, `\r`, `\t` as such), so
/// a value from the ground can neither forge a line nor reorder one.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Lower-case hex of `bytes` (hashes in records and file names).
pub fn hex(bytes: &[u8]) -> String {
    // Two digits per byte from a table: every audited call hashes its arguments, and a
    // `format!` per byte was an allocation per byte (issue 17's `get_status` profile).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::hex;

    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0x10, 0xa5, 0xff]), "000f10a5ff");
        let every: Vec<u8> = (0..=255).collect();
        let expected: String = every.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&every), expected);
    }
}
