//! Parsing N from user input (a URL path segment, a flag): SPEC "Numbers" says N is a
//! decimal integer 1 <= N <= max-n, and anything else gets a one-line reason the user
//! can act on. This is the only gate between untrusted text and `nth_prime`.

/// Longest input echoed back in an error, in characters: a megabyte of junk must not
/// become a megabyte of error message.
const ECHO_CHARS_MAX: usize = 40;

/// u64::MAX has 20 digits; anything longer is out of range whatever its value, and
/// refusing it up front means the digit loop below can never overflow.
const DIGITS_MAX: usize = 20;

/// Parses `text` as N, accepting only ASCII digits (no sign, no spaces, no exponent;
/// leading zeros are allowed, as in any decimal integer) with a value in `1..=max_n`.
pub fn parse_n(text: &str, max_n: u64) -> Result<u64, BadN> {
    parse_digits(text)
        .filter(|n| (1..=max_n).contains(n))
        .ok_or_else(|| BadN {
            echo: echo(text),
            upper: max_n.to_string(),
        })
}

/// A refused N; `Display` is the one wording of it for the node, the worker
/// and the client (400, or exit 2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadN {
    /// The input, quoted and cut short.
    echo: String,
    /// The largest N accepted, as the message names it.
    upper: String,
}

impl BadN {
    /// The same refusal naming `upper` as the bound (the client does not know
    /// the nodes' `--max-n`, so it names it in words).
    pub fn with_upper(self, upper: &str) -> BadN {
        BadN {
            upper: upper.to_string(),
            ..self
        }
    }
}

impl std::fmt::Display for BadN {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let BadN { echo, upper } = self;
        write!(f, "N must be a whole number from 1 to {upper}, got {echo}")
    }
}

impl std::error::Error for BadN {}

/// The value of `text` if it is 1 to 20 ASCII digits and fits a u64.
fn parse_digits(text: &str) -> Option<u64> {
    let digits = text.as_bytes();
    if digits.is_empty() || digits.len() > DIGITS_MAX || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |value, digit| {
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// `text` quoted with control characters escaped (so the message stays one line) and
/// cut to `ECHO_CHARS_MAX` characters with an ellipsis when longer.
fn echo(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS_MAX) {
        Some((cut, _)) => format!("{:?}", format!("{}…", &text[..cut])),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u64 = 10_000_000_000;

    #[test]
    fn accepts_boundaries_and_plain_digits() {
        assert_eq!(parse_n("1", MAX), Ok(1));
        assert_eq!(parse_n("10000", MAX), Ok(10_000));
        assert_eq!(parse_n("10000000000", MAX), Ok(MAX));
        assert_eq!(parse_n("007", MAX), Ok(7));
        assert_eq!(parse_n("18446744073709551615", u64::MAX), Ok(u64::MAX));
    }

    #[test]
    fn rejects_every_malformed_input_with_one_actionable_line() {
        let bad = [
            "",
            "0",
            "-1",
            "abc",
            "1e3",
            "12x",
            "+5",
            " 5",
            "5 ",
            "5\n",
            "1.0",
            "0x10",
            "١٢",
            "１２",
            "00000000000000000000",
        ];
        for text in bad {
            let message = parse_n(text, MAX).expect_err(text).to_string();
            assert!(
                message.starts_with("N must be a whole number from 1 to 10000000000, got \""),
                "{message}"
            );
            assert!(!message.contains('\n'), "{message:?}");
        }
    }

    #[test]
    fn rejects_values_just_past_max_n() {
        assert!(parse_n("10000000001", MAX).is_err());
        assert_eq!(parse_n("100", 100), Ok(100));
        assert!(parse_n("101", 100).is_err());
    }

    #[test]
    fn rejects_numbers_too_long_for_u64_without_overflow() {
        assert!(
            parse_n("18446744073709551615", MAX).is_err(),
            "u64::MAX > max_n"
        );
        assert!(
            parse_n("18446744073709551616", u64::MAX).is_err(),
            "u64::MAX + 1"
        );
        assert!(
            parse_n("100000000000000000000", u64::MAX).is_err(),
            "21 digits"
        );
        assert!(
            parse_n("000000000000000000001", u64::MAX).is_err(),
            "21 digits"
        );
        assert!(parse_n(&"9".repeat(25), u64::MAX).is_err(), "25 digits");
    }

    #[test]
    fn echo_of_huge_input_is_truncated() {
        let message = parse_n(&"7".repeat(1_000_000), MAX)
            .expect_err("too long")
            .to_string();
        assert!(message.len() < 120, "{message}");
        assert!(
            message.ends_with(&format!("\"{}…\"", "7".repeat(40))),
            "{message}"
        );
    }

    #[test]
    fn echo_truncation_respects_multibyte_characters() {
        let message = parse_n(&"é".repeat(100), MAX)
            .expect_err("not digits")
            .to_string();
        assert!(
            message.ends_with(&format!("\"{}…\"", "é".repeat(40))),
            "{message}"
        );
    }
}
