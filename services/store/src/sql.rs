//! Helpers shared by the backends: the SQL ones, and Parse's rules on
//! names they all follow.

use crate::error::{StoreError, StoreResult};

/// The name of Parse's unique index on `authData.<provider>.id`
/// (`_User_unique_authData_<provider>_id`), once the provider's name is
/// checked: it goes into SQL and JSON paths.
pub(crate) fn auth_data_index(provider: &str) -> StoreResult<String> {
    check_auth_provider(provider)?;
    Ok(format!("_User_unique_authData_{provider}_id"))
}

/// A provider name fit for index names, SQL and JSON paths, and MongoDB
/// field names: letters, digits and `_`.
pub(crate) fn check_auth_provider(provider: &str) -> StoreResult<()> {
    let valid = !provider.is_empty()
        && provider
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidSchema(format!(
            "invalid authData provider name {provider:?}"
        )))
    }
}

/// The field a unique index's name stands for, from what follows
/// `_unique_` in it: `username` for `_User_unique_username`, and Parse's
/// `_auth_data_<provider>` for `_User_unique_authData_<provider>_id`.
pub(crate) fn unique_index_field(rest: &str) -> String {
    match rest
        .strip_prefix("authData_")
        .and_then(|rest| rest.strip_suffix("_id"))
    {
        Some(provider) => format!("_auth_data_{provider}"),
        None => rest.to_owned(),
    }
}

/// `name` as a double-quoted SQL identifier, with embedded quotes doubled,
/// as both SQLite and PostgreSQL read it.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Renumbers the numbered placeholders (`?3`, `$3`) of `sql` in order of
/// first use and drops the parameters nothing refers to. Compilers bind a
/// value when they build an expression, and some expressions end up unused
/// (a condition that folds to a constant); databases refuse parameters a
/// statement does not use. Quoted identifiers and string literals are left
/// alone.
pub(crate) fn compact_params<T>(sql: &str, marker: char, params: Vec<T>) -> (String, Vec<T>) {
    let mut slots: Vec<Option<T>> = params.into_iter().map(Some).collect();
    let mut renumbered: Vec<Option<usize>> = vec![None; slots.len()];
    let mut kept = Vec::new();
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == q {
                quote = None;
            }
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            out.push(c);
            continue;
        }
        if c == marker && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut digits = String::new();
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                digits.push(d);
                chars.next();
            }
            let old = digits.parse::<usize>().unwrap_or(0).wrapping_sub(1);
            match renumbered.get_mut(old) {
                Some(slot) => {
                    let new = *slot.get_or_insert_with(|| {
                        kept.push(slots[old].take());
                        kept.len()
                    });
                    out.push(marker);
                    out.push_str(&new.to_string());
                }
                None => {
                    out.push(marker);
                    out.push_str(&digits);
                }
            }
            continue;
        }
        out.push(c);
    }
    (out, kept.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_index_names_give_parse_fields() {
        assert_eq!(unique_index_field("username"), "username");
        assert_eq!(unique_index_field("authData_acme_id"), "_auth_data_acme");
        assert_eq!(
            auth_data_index("my_idp").unwrap(),
            "_User_unique_authData_my_idp_id"
        );
        assert!(auth_data_index("a'b").is_err());
        assert!(auth_data_index("").is_err());
    }

    #[test]
    fn unused_parameters_are_dropped_and_the_rest_renumbered() {
        let (sql, params) = compact_params(
            "a = $3::text AND b = $1 AND \"x$2\" = 'it''s $2' AND c = $3",
            '$',
            vec!["one", "two", "three"],
        );
        assert_eq!(
            sql,
            "a = $1::text AND b = $2 AND \"x$2\" = 'it''s $2' AND c = $1"
        );
        assert_eq!(params, vec!["three", "one"]);
        let (sql, params) = compact_params("x = ?2 OR ?12", '?', vec![1, 2]);
        assert_eq!((sql.as_str(), params), ("x = ?1 OR ?12", vec![2]));
    }

    #[test]
    fn identifiers_are_quoted_with_embedded_quotes_doubled() {
        assert_eq!(quote_ident("_Join:users:_Role"), "\"_Join:users:_Role\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
