//! The part of Mustache that Parse Server's page files use: `{{name}}`
//! (HTML-escaped), `{{{name}}}` and `{{& name}}` (as they are), dotted
//! names into objects, sections `{{#name}}...{{/name}}` (shown when the
//! value is truthy, once per item of a list) and inverted sections
//! `{{^name}}...{{/name}}`, and comments `{{! ...}}`. A name with no value
//! renders as nothing, as in Mustache.

use serde_json::Value;

/// Renders `template` with the values of `view` (a JSON object).
pub(crate) fn render(template: &str, view: &Value) -> String {
    let mut out = String::with_capacity(template.len());
    render_into(template, &[view], &mut out);
    out
}

fn render_into(template: &str, stack: &[&Value], out: &mut String) {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let tag = &rest[start + 2..];
        // A triple mustache ends with `}}}`; an unclosed tag is text.
        let (inner, after) = if let Some(raw) = tag.strip_prefix('{') {
            match raw.find("}}}") {
                Some(end) => (format!("&{}", &raw[..end]), &raw[end + 3..]),
                None => break,
            }
        } else {
            match tag.find("}}") {
                Some(end) => (tag[..end].to_owned(), &tag[end + 2..]),
                None => break,
            }
        };
        out.push_str(&rest[..start]);
        rest = after;
        let inner = inner.trim();
        match inner.chars().next() {
            Some('!') => {}
            Some('&') => out.push_str(&text(lookup(stack, inner[1..].trim()))),
            Some(kind @ ('#' | '^')) => {
                let name = inner[1..].trim();
                let (body, after) = section(rest, name);
                rest = after;
                let value = lookup(stack, name);
                match (kind, value) {
                    ('#', Some(Value::Array(items))) => {
                        for item in items {
                            let mut inner_stack = stack.to_vec();
                            inner_stack.push(item);
                            render_into(body, &inner_stack, out);
                        }
                    }
                    ('#', Some(value)) if truthy(value) => {
                        let mut inner_stack = stack.to_vec();
                        inner_stack.push(value);
                        render_into(body, &inner_stack, out);
                    }
                    ('^', value) if !value.is_some_and(truthy) => render_into(body, stack, out),
                    _ => {}
                }
            }
            // A closing tag without its section: nothing to close.
            Some('/') => {}
            _ => out.push_str(&escape(&text(lookup(stack, inner)))),
        }
    }
    out.push_str(rest);
}

/// A section's body, up to its closing tag (nested sections of the same
/// name included), and what follows the closing tag.
fn section<'a>(template: &'a str, name: &str) -> (&'a str, &'a str) {
    let mut depth = 0;
    let mut at = 0;
    while let Some(found) = template[at..].find("{{") {
        let start = at + found;
        let Some(end) = template[start..].find("}}").map(|end| start + end) else {
            break;
        };
        let tag = template[start + 2..end].trim();
        if let Some(open) = tag.strip_prefix('#').or_else(|| tag.strip_prefix('^'))
            && open.trim() == name
        {
            depth += 1;
        } else if let Some(close) = tag.strip_prefix('/')
            && close.trim() == name
        {
            if depth == 0 {
                return (&template[..start], &template[end + 2..]);
            }
            depth -= 1;
        }
        at = end + 2;
    }
    (template, "")
}

/// A name's value: `.` is the current context; other names are looked up
/// from the innermost context out, then followed through dots.
fn lookup<'a>(stack: &[&'a Value], name: &str) -> Option<&'a Value> {
    if name == "." {
        return stack.last().copied();
    }
    let mut parts = name.split('.');
    let first = parts.next()?;
    let mut value = stack.iter().rev().find_map(|context| context.get(first))?;
    for part in parts {
        value = value.get(part)?;
    }
    Some(value)
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => true,
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Mustache's escaping: HTML's, and `/`, the backquote and `=`.
fn escape(text: &str) -> String {
    escape_chars(text, true)
}

/// HTML's escaping of `&`, `<`, `>`, `"` and `'`, for oxbase's own pages.
pub(crate) fn escape_html(text: &str) -> String {
    escape_chars(text, false)
}

fn escape_chars(text: &str, mustache: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '/' if mustache => out.push_str("&#x2F;"),
            '`' if mustache => out.push_str("&#x60;"),
            '=' if mustache => out.push_str("&#x3D;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_what_parse_pages_use() {
        let view = json!({
            "appName": "Tom & Jerry",
            "error": "<b>bad</b>",
            "empty": "",
            "user": {"name": "ann"},
            "items": [{"n": 1}, {"n": 2}],
        });
        let cases = [
            ("Hello {{appName}}!", "Hello Tom &amp; Jerry!"),
            ("{{{error}}} {{& error}}", "<b>bad</b> <b>bad</b>"),
            ("{{ user.name }}", "ann"),
            ("[{{missing}}]", "[]"),
            (
                "{{#error}}E: {{error}}{{/error}}",
                "E: &lt;b&gt;bad&lt;&#x2F;b&gt;",
            ),
            ("{{#empty}}x{{/empty}}{{^empty}}none{{/empty}}", "none"),
            ("{{#items}}<{{n}}>{{/items}}", "<1><2>"),
            (
                "{{#user}}{{name}} of {{appName}}{{/user}}",
                "ann of Tom &amp; Jerry",
            ),
            ("a{{! a comment }}b", "ab"),
            ("open {{unclosed", "open {{unclosed"),
        ];
        for (template, expected) in cases {
            assert_eq!(render(template, &view), expected, "{template}");
        }
    }
}
