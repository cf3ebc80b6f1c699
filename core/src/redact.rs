//! Credentials out of URLs before a URL reaches a log line or an error
//! message: a `user:password@` part, and the values of query parameters
//! that carry a secret (`token`, `signature`, `key`, ...). A callback URL
//! is the client's, and clients put passwords in them; a signed link is a
//! bearer credential until it expires. Everything else of the URL is kept,
//! so a log still says where a request went.

/// Query parameters whose value is a credential, matched case-insensitively
/// as a part of the name (`api_key`, `X-Amz-Signature`, `access_token`).
const SECRET_PARAMS: [&str; 8] = [
    "token",
    "signature",
    "sig",
    "key",
    "secret",
    "password",
    "auth",
    "credential",
];

const HIDDEN: &str = "***";

/// `raw` with its credentials replaced by `***`. Something that does not
/// parse as a URL keeps nothing past a `@` in its authority, so a broken URL
/// cannot smuggle a password through either.
pub fn url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut parsed) => {
            if !parsed.username().is_empty() || parsed.password().is_some() {
                let _ = parsed.set_username(HIDDEN);
                let _ = parsed.set_password(None);
            }
            if let Some(query) = parsed.query().map(str::to_owned) {
                parsed.set_query(Some(&redact_query(&query)));
            }
            parsed.to_string()
        }
        Err(_) => redact_unparsed(raw),
    }
}

/// A request target as a server sees it (`/v1/files/a.wav?signature=...`).
pub fn target(path_and_query: &str) -> String {
    match path_and_query.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_query(query)),
        None => path_and_query.to_owned(),
    }
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret(name) => format!("{name}={HIDDEN}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| name.contains(s))
}

fn redact_unparsed(raw: &str) -> String {
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, raw),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{HIDDEN}@{host}"),
        None => authority.to_owned(),
    };
    let tail = target(tail);
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_url_is_hidden_and_the_host_kept() {
        let shown = url("http://user:pw@hooks.example.com:8080/cb?order=7");
        assert_eq!(shown, "http://***@hooks.example.com:8080/cb?order=7");
    }

    #[test]
    fn secret_query_values_are_hidden_and_others_kept() {
        let shown =
            url("https://h.example/cb?api_key=abc&order=7&X-Amz-Signature=def&access_token=ghi");
        assert_eq!(
            shown,
            "https://h.example/cb?api_key=***&order=7&X-Amz-Signature=***&access_token=***"
        );
        assert_eq!(
            target("/v1/files/a.wav?expires=9&signature=0123"),
            "/v1/files/a.wav?expires=9&signature=***"
        );
        assert_eq!(target("/health"), "/health");
    }

    #[test]
    fn a_url_that_does_not_parse_loses_its_userinfo_too() {
        let shown = url("http://user:pw@[bad/path?token=x");
        assert!(!shown.contains("pw"), "{shown}");
        assert!(!shown.contains("token=x"), "{shown}");
    }

    #[test]
    fn a_url_without_credentials_is_unchanged() {
        let plain = "http://127.0.0.1:9/hook";
        assert_eq!(url(plain), plain);
    }
}
