//! Parse Server's rules for file names, directories and extensions.

use regex::Regex;

use super::mime::is_token;

use oxbase_objects::{ParseError, ParseResult, code};

/// Parse's file name rule: at most 128 characters, a letter, digit or `_`
/// first, then letters, digits and `@. ~_-`.
pub fn validate_filename(name: &str) -> ParseResult<()> {
    if name.encode_utf16().count() > 128 {
        return Err(ParseError::new(
            code::INVALID_FILE_NAME,
            "Filename too long.",
        ));
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "@. ~_-".contains(c)) {
        return Err(ParseError::new(
            code::INVALID_FILE_NAME,
            "Filename contains invalid characters.",
        ));
    }
    Ok(())
}

/// Sub-routes of `GET /files/{appId}/...`; a directory may not start with
/// one, or its files' URLs would reach the sub-route.
pub const RESERVED_DIRECTORY_SEGMENTS: &[&str] = &["metadata"];

/// Parse Server 9's rule for the `directory` a master-key upload may name.
pub fn validate_directory(directory: &str) -> ParseResult<()> {
    let invalid = |message: &str| Err(ParseError::new(code::INVALID_FILE_NAME, message));
    if directory.is_empty() {
        return invalid("Directory must not be empty.");
    }
    if directory.encode_utf16().count() > 256 {
        return invalid("Directory path is too long.");
    }
    if directory.contains("..") {
        return invalid("Directory must not contain \"..\".");
    }
    if directory.starts_with('/') || directory.ends_with('/') {
        return invalid("Directory must not start or end with \"/\".");
    }
    if directory.contains("//") {
        return invalid("Directory must not contain consecutive slashes.");
    }
    let first = directory.split('/').next().unwrap_or_default();
    if RESERVED_DIRECTORY_SEGMENTS.contains(&first) {
        return Err(ParseError::new(
            code::INVALID_FILE_NAME,
            format!("Directory must not start with reserved segment \"{first}\"."),
        ));
    }
    let mut chars = directory.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "_-/".contains(c)) {
        return invalid("Directory contains invalid characters.");
    }
    Ok(())
}

/// One `file_extensions` entry.
#[derive(Debug)]
enum Pattern {
    /// `*`: every extension.
    Any,
    Regex(Regex),
    /// `^(?!NOT)REST`, the negative lookahead Parse's defaults use, which
    /// Rust's `regex` has no syntax for: matches when `^(?:NOT)` does not
    /// and `^(?:REST)` does.
    NotThen(Regex, Regex),
    /// A pattern neither form can read; it matches nothing.
    Invalid,
}

/// The extensions non-master uploads may have (Parse's
/// `fileUpload.fileExtensions`): an extension passes when any pattern
/// matches it.
#[derive(Debug)]
pub struct ExtensionRules {
    patterns: Vec<Pattern>,
}

impl ExtensionRules {
    pub fn new(patterns: &[String]) -> Self {
        let patterns = patterns
            .iter()
            .map(|source| {
                let pattern = compile(source);
                if matches!(pattern, Pattern::Invalid) {
                    tracing::warn!(
                        pattern = %source,
                        "a files.file_extensions pattern cannot be read; it allows nothing"
                    );
                }
                pattern
            })
            .collect();
        Self { patterns }
    }

    pub fn allows_all(&self) -> bool {
        self.patterns.iter().any(|p| matches!(p, Pattern::Any))
    }

    pub fn allows(&self, extension: &str) -> bool {
        self.patterns.iter().any(|pattern| match pattern {
            Pattern::Any => true,
            Pattern::Regex(regex) => regex.is_match(extension),
            Pattern::NotThen(not, then) => !not.is_match(extension) && then.is_match(extension),
            Pattern::Invalid => false,
        })
    }
}

fn compile(source: &str) -> Pattern {
    if source == "*" {
        return Pattern::Any;
    }
    if let Ok(regex) = Regex::new(source) {
        return Pattern::Regex(regex);
    }
    if let Some(inner) = source.strip_prefix("^(?!")
        && let Some(close) = closing_paren(inner)
    {
        let (not, rest) = (&inner[..close], &inner[close + 1..]);
        if let (Ok(not), Ok(then)) = (
            Regex::new(&format!("^(?:{not})")),
            Regex::new(&format!("^(?:{rest})")),
        ) {
            return Pattern::NotThen(not, then);
        }
    }
    Pattern::Invalid
}

/// The byte index of the `)` closing a group whose `(` came just before
/// `text`, skipping escapes and character classes.
fn closing_paren(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_class = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    None
}

/// Parse Server 9's extension check for a non-master upload of `name`
/// with `content_type`.
pub fn check_extension(
    rules: &ExtensionRules,
    name: &str,
    content_type: Option<&str>,
) -> ParseResult<()> {
    let refuse = |ext: &str| {
        Err(ParseError::new(
            code::FILE_SAVE_ERROR,
            format!("File upload of extension {ext} is disabled."),
        ))
    };
    let extension = super::mime::extension(name).map(|ext| {
        let ext = ext.split(';').next().unwrap_or_default();
        ext.chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
    });
    let extension = extension.filter(|ext| !ext.is_empty());
    if let Some(ext) = &extension
        && !rules.allows(ext)
    {
        return refuse(ext);
    }
    // A file whose extension means no known type is served with the type
    // the client gave, so that type must pass as well.
    let recognized = extension.is_some() && super::mime::type_for_name(name).is_some();
    let Some(content_type) = content_type.filter(|ct| !ct.is_empty()) else {
        return Ok(());
    };
    if recognized || rules.allows_all() {
        return Ok(());
    }
    let (kind, subtype) = match content_type.split_once('/') {
        Some((kind, rest)) if !kind.is_empty() => (
            kind.trim(),
            rest.split(';').next().unwrap_or_default().trim(),
        ),
        _ => ("", ""),
    };
    if !is_token(kind) || !is_token(subtype) {
        let bare = if content_type.contains('/') {
            kind
        } else {
            content_type.split(';').next().unwrap_or_default()
        };
        let bare: String = bare.chars().filter(|c| !c.is_whitespace()).collect();
        if !bare.is_empty() && !rules.allows(&bare) {
            return refuse(&bare);
        }
        return Err(ParseError::new(
            code::FILE_SAVE_ERROR,
            "Invalid Content-Type.",
        ));
    }
    let subtype: String = subtype.chars().filter(|c| !c.is_whitespace()).collect();
    if !rules.allows(&subtype) {
        return refuse(&subtype);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(result: ParseResult<()>) -> Option<i32> {
        match result {
            Ok(()) => None,
            Err(ParseError::Parse { code, .. }) => Some(code),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_names() {
        for ok in ["a.txt", "_x", "A1 b@c~d-e_f.g", &"a".repeat(128)] {
            assert!(validate_filename(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-a",
            "a/b",
            "a\\b",
            "é.txt",
            "a$b",
            "a\nb",
            &"a".repeat(129),
        ] {
            assert_eq!(code_of(validate_filename(bad)), Some(122), "{bad:?}");
        }
    }

    #[test]
    fn directories() {
        for ok in ["a", "a/b-c/d_e", "2024/05"] {
            assert!(validate_directory(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "..",
            "metadata",
            "metadata/x",
            "-a",
            "a b",
            "a.b",
        ] {
            assert_eq!(code_of(validate_directory(bad)), Some(122), "{bad:?}");
        }
    }

    #[test]
    fn lookahead_defaults_and_plain_patterns() {
        let oxbase_default = ExtensionRules::new(&["^(?![xXsS]?[hH][tT][mM][lL]?$)".into()]);
        for ext in ["txt", "png", "htmlx", "jpg"] {
            assert!(oxbase_default.allows(ext), "{ext}");
        }
        for ext in ["html", "HTM", "xhtml", "shtml"] {
            assert!(!oxbase_default.allows(ext), "{ext}");
        }
        // Parse Server 9's default.
        let parse = ExtensionRules::new(&crate::config::FilesConfig::default().file_extensions);
        for ext in [
            "svg", "SVGZ", "svg+xml", "xml", "xht", "xsl", "rdf", "mathml", "html",
        ] {
            assert!(!parse.allows(ext), "{ext}");
        }
        assert!(parse.allows("png") && parse.allows("json"));
        let listed = ExtensionRules::new(&["^png$".into(), "jpe?g".into()]);
        assert!(listed.allows("png") && listed.allows("jpeg") && !listed.allows("gif"));
        let broken = ExtensionRules::new(&["(".into()]);
        assert!(!broken.allows("png"));
        assert!(ExtensionRules::new(&["*".into()]).allows("html"));
    }

    #[test]
    fn extension_checks_follow_parse() {
        let rules = ExtensionRules::new(&["^(?![xXsS]?[hH][tT][mM][lL]?$)".into()]);
        let check = |name: &str, ct: Option<&str>| code_of(check_extension(&rules, name, ct));
        assert_eq!(check("a.txt", Some("text/html")), None);
        assert_eq!(check("a.html", Some("text/plain")), Some(130));
        assert_eq!(check("a.HTM", None), Some(130));
        assert_eq!(check("noext", Some("text/html")), Some(130));
        assert_eq!(check("noext", Some("text/html; charset=utf-8")), Some(130));
        assert_eq!(check("noext", Some("image/png")), None);
        assert_eq!(check("a.unknownext", Some("text/html")), Some(130));
        assert_eq!(check("noext", Some("html")), Some(130));
        assert_eq!(check("noext", Some("image/")), Some(130));
        assert_eq!(check("noext", Some("text/plain,text/html")), Some(130));
        assert_eq!(check("noext", None), None);
    }
}
