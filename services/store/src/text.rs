//! Full-text matching for `$text` on backends without a text engine of
//! their own. Semantics follow MongoDB's `$text`, the behaviour most Parse
//! apps were written against: words match any of them, `"quoted phrases"`
//! must all appear, and `-word` excludes. Matching is on whole words, case-
//! and diacritic-insensitive unless asked otherwise. There is no stemming.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

#[derive(Debug, Clone, PartialEq)]
pub struct TextQuery {
    words: Vec<String>,
    phrases: Vec<Vec<String>>,
    excluded: Vec<String>,
    case_sensitive: bool,
    diacritic_sensitive: bool,
}

impl TextQuery {
    pub fn parse(term: &str, case_sensitive: bool, diacritic_sensitive: bool) -> Self {
        let norm = |s: &str| normalize(s, case_sensitive, diacritic_sensitive);
        let mut query = TextQuery {
            words: Vec::new(),
            phrases: Vec::new(),
            excluded: Vec::new(),
            case_sensitive,
            diacritic_sensitive,
        };
        // Quoted phrases first; what is outside quotes is words.
        for (i, part) in term.split('"').enumerate() {
            if i % 2 == 1 {
                let phrase = words_of(&norm(part));
                if !phrase.is_empty() {
                    query.phrases.push(phrase);
                }
                continue;
            }
            for token in part.split_whitespace() {
                if let Some(rest) = token.strip_prefix('-') {
                    query.excluded.extend(words_of(&norm(rest)));
                } else {
                    query.words.extend(words_of(&norm(token)));
                }
            }
        }
        query
    }

    /// The search as a PostgreSQL `tsquery`: any word, every phrase, no
    /// excluded word. `None` when nothing could match.
    pub fn to_tsquery(&self) -> Option<String> {
        // Words come from `words_of`, so they are letters and digits only,
        // but they are still quoted as tsquery lexemes.
        let lexeme = |w: &String| format!("'{}'", w.replace('\'', "''"));
        let mut parts = Vec::new();
        if !self.words.is_empty() {
            let words: Vec<String> = self.words.iter().map(lexeme).collect();
            parts.push(format!("({})", words.join(" | ")));
        }
        for phrase in &self.phrases {
            let words: Vec<String> = phrase.iter().map(lexeme).collect();
            parts.push(format!("({})", words.join(" <-> ")));
        }
        if parts.is_empty() {
            return None;
        }
        for word in &self.excluded {
            parts.push(format!("!{}", lexeme(word)));
        }
        Some(parts.join(" & "))
    }

    /// 0 when `text` does not match; otherwise how well it does (the
    /// number of matching word occurrences, plus one per phrase).
    pub fn score(&self, text: &str) -> f64 {
        let words = words_of(&normalize(
            text,
            self.case_sensitive,
            self.diacritic_sensitive,
        ));
        if self.excluded.iter().any(|x| words.contains(x)) {
            return 0.0;
        }
        let mut score = 0.0;
        for phrase in &self.phrases {
            if !words.windows(phrase.len()).any(|w| w == phrase.as_slice()) {
                return 0.0;
            }
            score += 1.0;
        }
        if !self.words.is_empty() {
            let hits = words.iter().filter(|w| self.words.contains(w)).count();
            if hits == 0 {
                return 0.0;
            }
            score += hits as f64;
        }
        score
    }
}

fn normalize(text: &str, case_sensitive: bool, diacritic_sensitive: bool) -> String {
    let text = if case_sensitive {
        text.to_owned()
    } else {
        text.to_lowercase()
    };
    if diacritic_sensitive {
        text
    } else {
        text.nfd().filter(|c| !is_combining_mark(*c)).collect()
    }
}

fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_word_matches_and_counts() {
        let q = TextQuery::parse("coffee tea", false, false);
        assert_eq!(q.score("Coffee and more COFFEE"), 2.0);
        assert_eq!(q.score("green tea"), 1.0);
        assert_eq!(q.score("coffees"), 0.0);
    }

    #[test]
    fn tsqueries() {
        let q = TextQuery::parse("coffee tea \"iced latte\" -decaf", false, false);
        assert_eq!(
            q.to_tsquery().unwrap(),
            "('coffee' | 'tea') & ('iced' <-> 'latte') & !'decaf'"
        );
        assert_eq!(TextQuery::parse("-decaf", false, false).to_tsquery(), None);
    }

    #[test]
    fn phrases_exclusions_and_diacritics() {
        let q = TextQuery::parse("\"iced coffee\" -decaf", false, false);
        assert_eq!(q.score("I like iced coffee"), 1.0);
        assert_eq!(q.score("iced decaf coffee"), 0.0);
        assert_eq!(q.score("iced coffee, decaf"), 0.0);
        let q = TextQuery::parse("cafe", false, false);
        assert_eq!(q.score("Café au lait"), 1.0);
        let q = TextQuery::parse("cafe", false, true);
        assert_eq!(q.score("Café au lait"), 0.0);
        let q = TextQuery::parse("Cafe", true, false);
        assert_eq!(q.score("cafe"), 0.0);
    }
}
