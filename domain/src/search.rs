//! The words a text is found by, the same for every ticket type, the queries and the indexes.

/// The distinct words of `text` that `q` searches by: lowercased runs of letters and digits, at
/// most `MAX_TERM_CHARS` long, sorted. Queries and the index use the same function.
pub fn search_terms(text: &str) -> Vec<String> {
    let mut terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty() && word.chars().count() <= MAX_TERM_CHARS)
        .map(str::to_lowercase)
        .collect();
    terms.sort_unstable();
    terms.dedup();
    terms
}

/// Longer "words" (hashes, encoded blobs) are not worth indexing.
pub const MAX_TERM_CHARS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_are_distinct_lowercase_words() {
        assert_eq!(
            search_terms("VPN down; vpn-gateway DOWN"),
            ["down", "gateway", "vpn"]
        );
        assert!(search_terms(&"x".repeat(65)).is_empty());
    }
}
