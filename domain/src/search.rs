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

/// Ranks documents by how well they match the words of a query (Okapi BM25 over distinct
/// words): rare words count more than common ones, and a match in a short document more than
/// in a long one. `documents` are the distinct words of each candidate (as [`search_terms`]
/// gives them); `corpus_size` is how many documents the candidates were drawn from. Returns
/// the index and score of each document matching at least one word, best first (ties in
/// document order).
pub fn rank_by_relevance(
    query: &[String],
    documents: &[Vec<String>],
    corpus_size: usize,
) -> Vec<(usize, f64)> {
    const K1: f64 = 1.2;
    const B: f64 = 0.75;
    if documents.is_empty() || query.is_empty() {
        return Vec::new();
    }
    let corpus = corpus_size.max(documents.len()) as f64;
    let average_length =
        documents.iter().map(Vec::len).sum::<usize>() as f64 / documents.len() as f64;
    let idf: Vec<f64> = query
        .iter()
        .map(|word| {
            let containing = documents
                .iter()
                .filter(|words| words.binary_search(word).is_ok())
                .count() as f64;
            ((corpus - containing + 0.5) / (containing + 0.5) + 1.0).ln()
        })
        .collect();
    let mut ranked: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .filter_map(|(index, words)| {
            let length_norm = 1.0 - B + B * words.len() as f64 / average_length.max(1.0);
            let score: f64 = query
                .iter()
                .zip(&idf)
                .filter(|(word, _)| words.binary_search(word).is_ok())
                .map(|(_, idf)| idf * (K1 + 1.0) / (1.0 + K1 * length_norm))
                .sum();
            (score > 0.0).then_some((index, score))
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

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

    #[test]
    fn rare_words_and_more_matches_rank_higher() {
        let docs: Vec<Vec<String>> = [
            "vpn tunnel drops on office wifi workaround use cable",
            "printer offline",
            "vpn client crashes",
            "email delayed vpn",
        ]
        .iter()
        .map(|text| search_terms(text))
        .collect();
        let query = search_terms("VPN drops every few minutes on wifi");
        let ranked = rank_by_relevance(&query, &docs, 10);
        assert_eq!(ranked[0].0, 0, "{ranked:?}");
        assert!(ranked.iter().all(|(index, _)| *index != 1));
        assert_eq!(ranked.len(), 3);
        assert!(rank_by_relevance(&[], &docs, 10).is_empty());
    }
}
