//! Media types by file extension, for the types files commonly have: which
//! type a name's extension means, and which extension a type has (the
//! first one listed), as Parse Server derives them with the `mime` package.

/// Each type with its extensions, the preferred one first. An extension
/// listed under two types means the first of them.
const TYPES: &[(&str, &[&str])] = &[
    (
        "text/plain",
        &["txt", "text", "conf", "def", "list", "log", "in", "ini"],
    ),
    ("text/html", &["html", "htm", "shtml"]),
    ("text/css", &["css"]),
    ("text/csv", &["csv"]),
    ("text/tab-separated-values", &["tsv"]),
    ("text/markdown", &["md", "markdown"]),
    ("text/javascript", &["js", "mjs"]),
    ("text/calendar", &["ics", "ifb"]),
    ("text/x-vcard", &["vcf"]),
    ("text/yaml", &["yaml", "yml"]),
    ("text/x-c", &["c", "cc", "cxx", "cpp", "h", "hh", "dic"]),
    ("application/json", &["json", "map"]),
    ("application/ld+json", &["jsonld"]),
    ("application/geo+json", &["geojson"]),
    ("application/xml", &["xml", "xsl", "xsd", "rng"]),
    ("text/xml", &["xml"]),
    ("application/xhtml+xml", &["xhtml", "xht"]),
    ("image/svg+xml", &["svg", "svgz"]),
    ("application/pdf", &["pdf"]),
    ("application/zip", &["zip"]),
    ("application/gzip", &["gz"]),
    ("application/x-tar", &["tar"]),
    ("application/x-7z-compressed", &["7z"]),
    ("application/vnd.rar", &["rar"]),
    ("application/x-bzip2", &["bz2", "boz"]),
    ("application/x-xz", &["xz"]),
    ("application/java-archive", &["jar", "war", "ear"]),
    (
        "application/octet-stream",
        &[
            "bin", "dms", "lrf", "mar", "so", "dist", "distz", "pkg", "bpk", "dump", "elc",
            "deploy", "exe", "dll", "deb", "dmg", "iso", "img", "msi", "msp", "msm", "buffer",
        ],
    ),
    ("application/wasm", &["wasm"]),
    ("application/rtf", &["rtf"]),
    ("application/epub+zip", &["epub"]),
    ("application/msword", &["doc", "dot"]),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        &["docx"],
    ),
    (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        &["xlsx"],
    ),
    (
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        &["pptx"],
    ),
    (
        "application/vnd.ms-excel",
        &["xls", "xlm", "xla", "xlc", "xlt", "xlw"],
    ),
    ("application/vnd.ms-powerpoint", &["ppt", "pps", "pot"]),
    ("application/vnd.oasis.opendocument.text", &["odt"]),
    ("application/vnd.oasis.opendocument.spreadsheet", &["ods"]),
    ("application/vnd.oasis.opendocument.presentation", &["odp"]),
    ("application/vnd.android.package-archive", &["apk"]),
    ("application/vnd.apple.keynote", &["key"]),
    ("application/vnd.apple.pages", &["pages"]),
    ("application/vnd.apple.numbers", &["numbers"]),
    ("application/postscript", &["ai", "eps", "ps"]),
    ("application/x-sh", &["sh"]),
    ("application/x-httpd-php", &["php"]),
    ("application/vnd.google-earth.kml+xml", &["kml"]),
    ("application/gpx+xml", &["gpx"]),
    ("image/jpeg", &["jpg", "jpeg", "jpe"]),
    ("image/png", &["png"]),
    ("image/gif", &["gif"]),
    ("image/webp", &["webp"]),
    ("image/avif", &["avif"]),
    ("image/heic", &["heic"]),
    ("image/heif", &["heif"]),
    ("image/jxl", &["jxl"]),
    ("image/bmp", &["bmp", "dib"]),
    ("image/tiff", &["tif", "tiff"]),
    ("image/vnd.microsoft.icon", &["ico"]),
    ("image/vnd.adobe.photoshop", &["psd"]),
    ("audio/mpeg", &["mpga", "mp2", "mp2a", "mp3", "m2a", "m3a"]),
    ("audio/mp4", &["m4a", "mp4a"]),
    ("audio/ogg", &["oga", "ogg", "spx", "opus"]),
    ("audio/wav", &["wav"]),
    ("audio/x-flac", &["flac"]),
    ("audio/aac", &["aac"]),
    ("audio/webm", &["weba"]),
    ("audio/midi", &["mid", "midi", "kar", "rmi"]),
    ("audio/amr", &["amr"]),
    ("audio/x-caf", &["caf"]),
    ("video/mp4", &["mp4", "mp4v", "mpg4"]),
    ("video/quicktime", &["qt", "mov"]),
    ("video/webm", &["webm"]),
    ("video/mpeg", &["mpeg", "mpg", "mpe", "m1v", "m2v"]),
    ("video/x-m4v", &["m4v"]),
    ("video/x-msvideo", &["avi"]),
    ("video/x-matroska", &["mkv", "mk3d", "mks"]),
    ("video/3gpp", &["3gp", "3gpp"]),
    ("video/mp2t", &["ts", "m2t", "m2ts", "mts"]),
    ("font/ttf", &["ttf"]),
    ("font/otf", &["otf"]),
    ("font/woff", &["woff"]),
    ("font/woff2", &["woff2"]),
];

/// The extension of a name: what follows its last dot, if anything does.
pub fn extension(name: &str) -> Option<&str> {
    let (_, ext) = name.rsplit_once('.')?;
    (!ext.is_empty()).then_some(ext)
}

/// The type a file name's extension means.
pub fn type_for_name(name: &str) -> Option<&'static str> {
    let last = name.rsplit('/').next().unwrap_or(name);
    let ext = extension(last)?.to_ascii_lowercase();
    TYPES
        .iter()
        .find(|(_, exts)| exts.contains(&ext.as_str()))
        .map(|(mime, _)| *mime)
}

/// The preferred extension of a content type (its parameters ignored).
pub fn extension_for_type(content_type: &str) -> Option<&'static str> {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    TYPES
        .iter()
        .find(|(mime, _)| *mime == essence)
        .and_then(|(_, exts)| exts.first().copied())
}

/// Extensions of documents a browser renders with script (the HTML, SVG
/// and XML families), as Parse Server 9's default `fileExtensions` lists
/// them; `+xml` forms count too.
const ACTIVE_EXTENSIONS: &[&str] = &[
    "html", "htm", "shtml", "xhtml", "xht", "svg", "svgz", "xml", "xsl", "xslt", "xsd", "rng",
    "rdf", "owl", "mathml",
];

/// Types browsers guess the real type of by sniffing the bytes, which may
/// find HTML.
const SNIFFED_TYPES: &[&str] = &["unknown/unknown", "application/unknown", "*/*"];

/// An RFC 9110 token.
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// A content type's `type/subtype`, lowercase and without parameters, or
/// `None` when it is no valid media type (which a browser would sniff).
pub fn essence(content_type: &str) -> Option<String> {
    let bare = content_type.split(';').next().unwrap_or_default().trim();
    let (kind, subtype) = bare.split_once('/')?;
    (is_token(kind) && is_token(subtype)).then(|| bare.to_ascii_lowercase())
}

/// Whether a browser opening the file from the API's origin could run
/// script in it. Both the type it is served with and its name's extension
/// count, since an upload may claim one and name the other.
pub fn is_active(stored_type: Option<&str>, name: &str) -> bool {
    let by_type = stored_type.is_some_and(|ct| essence(ct).is_none_or(|e| is_active_type(&e)));
    let last = name.rsplit('/').next().unwrap_or(name);
    let by_name = extension(last).is_some_and(|ext| {
        let ext = ext.to_ascii_lowercase();
        let ext = ext.strip_suffix("+xml").unwrap_or(&ext);
        ACTIVE_EXTENSIONS.contains(&ext)
    });
    by_type || by_name || type_for_name(name).is_some_and(is_active_type)
}

/// HTML and XML types (which may hold XHTML and its scripts), multipart
/// ones (whose parts carry their own types), and those browsers sniff.
fn is_active_type(essence: &str) -> bool {
    let (kind, subtype) = essence.split_once('/').unwrap_or((essence, ""));
    matches!(
        essence,
        "text/html" | "text/xml" | "text/xsl" | "application/xml"
    ) || subtype.ends_with("+xml")
        || kind == "multipart"
        || SNIFFED_TYPES.contains(&essence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_extensions() {
        assert_eq!(type_for_name("a.TXT"), Some("text/plain"));
        assert_eq!(type_for_name("dir/x.y.png"), Some("image/png"));
        assert_eq!(type_for_name("a.xml"), Some("application/xml"));
        assert_eq!(type_for_name("a.zz"), None);
        assert_eq!(type_for_name("noext"), None);
        assert_eq!(type_for_name("trailing."), None);
        assert_eq!(extension_for_type("image/jpeg"), Some("jpg"));
        assert_eq!(
            extension_for_type(" Text/Plain ; charset=utf-8"),
            Some("txt")
        );
        assert_eq!(extension_for_type("text/xml"), Some("xml"));
        assert_eq!(extension_for_type("application/x-unknown"), None);
        assert_eq!(extension("a.b.c"), Some("c"));
        assert_eq!(extension("a."), None);
    }

    #[test]
    fn essences() {
        assert_eq!(
            essence(" Text/HTML ; charset=utf-8").as_deref(),
            Some("text/html")
        );
        for bad in [
            "",
            "html",
            "image/",
            "/png",
            "text/plain,text/html",
            "image//svg",
        ] {
            assert_eq!(essence(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn active_content() {
        for (content_type, name) in [
            (Some("image/svg+xml"), "a_x.svg"),
            (Some("image/png"), "a_x.svg"),
            (Some("image/png"), "dir/a_x.XHT"),
            (Some("image/png"), "a_x.rdf"),
            (Some("image/png"), "a_x.svg+xml"),
            (Some("text/html; charset=utf-8"), "a_x.txt"),
            (Some("application/xhtml+xml"), "a_x"),
            (Some("text/xml"), "a_x"),
            (Some("application/xml"), "a_x"),
            (Some("application/vnd.google-earth.kml+xml"), "a_x"),
            (Some("multipart/x-mixed-replace"), "a_x"),
            (Some("application/unknown"), "a_x"),
            (Some("text/plain,text/html"), "a_x"),
            (Some("image/"), "a_x"),
            (None, "a_x.html"),
            (None, "a_x.xml"),
        ] {
            assert!(is_active(content_type, name), "{content_type:?} {name}");
        }
        for (content_type, name) in [
            (Some("image/png"), "a_x.png"),
            (Some("text/plain"), "a_x.txt"),
            (Some("application/pdf"), "a_x.pdf"),
            (Some("application/octet-stream"), "a_x"),
            (Some("application/json"), "a_x.json"),
            (Some("video/mp4"), "a_x.mp4"),
            (None, "a_x"),
            (None, "a_x.htmlx"),
        ] {
            assert!(!is_active(content_type, name), "{content_type:?} {name}");
        }
    }
}
