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
            let password = parsed.password().map(str::to_owned);
            if !parsed.username().is_empty() || password.is_some() {
                let _ = parsed.set_username(HIDDEN);
                let _ = parsed.set_password(None);
            }
            if let Some(query) = parsed.query().map(str::to_owned) {
                parsed.set_query(Some(&redact_query(&query)));
            }
            let shown = parsed.to_string();
            match password {
                Some(password) => hide_everywhere(shown, &password),
                None => shown,
            }
        }
        Err(_) => redact_unparsed(raw),
    }
}

/// A password shorter than this is hidden in the userinfo only: hiding
/// every `ab` of a URL would leave a log unreadable, and so short a
/// password protects nothing anyway.
const SHORTEST_HIDDEN_ELSEWHERE: usize = 4;

/// `shown` with every other copy of the userinfo's `password` hidden too, as
/// written (percent-encoded) and decoded: a client that repeats it in the
/// path or a query parameter of any name must not leak it (found by the
/// `webhook_signer` fuzz target).
fn hide_everywhere(shown: String, password: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(password)
        .decode_utf8_lossy()
        .into_owned();
    [password, decoded.as_str()]
        .into_iter()
        .filter(|p| p.chars().count() >= SHORTEST_HIDDEN_ELSEWHERE)
        .fold(shown, |shown, p| shown.replace(p, HIDDEN))
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
    let (password, authority) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (
            userinfo.split_once(':').map(|(_, p)| p),
            format!("{HIDDEN}@{host}"),
        ),
        None => (None, authority.to_owned()),
    };
    let tail = target(tail);
    let shown = match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    };
    match password {
        Some(password) => hide_everywhere(shown, password),
        None => shown,
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
        let shown = url("http://user:hunter22@[bad/hunter22?x=hunter22");
        assert!(!shown.contains("hunter22"), "{shown}");
    }

    #[test]
    fn a_password_repeated_elsewhere_in_the_url_is_hidden_there_too() {
        // The fuzzer's input, as text: the password again in a query
        // parameter whose name marks no secret.
        let raw = "http://user:s3cretpw@hooks.example.com:8080/c\u{db}b?tokeacbauthn=&order/user:s3cretpw@hooks.example.com:8080/c\u{db}b?))";
        let shown = url(raw);
        assert!(!shown.contains("s3cretpw"), "{shown}");
        assert!(
            shown.starts_with("http://***@hooks.example.com:8080/"),
            "{shown}"
        );
        // Percent-encoded in the userinfo, decoded in the path.
        let shown = url("https://u:p%2Fss%2Fword@h.example/p/ss/word/cb");
        assert!(
            !shown.contains("p/ss/word") && !shown.contains("p%2Fss%2Fword"),
            "{shown}"
        );
        // A short password is hidden in the userinfo only.
        assert_eq!(url("http://u:ab@h.example/ab"), "http://***@h.example/ab");
    }

    #[test]
    fn a_url_without_credentials_is_unchanged() {
        let plain = "http://127.0.0.1:9/hook";
        assert_eq!(url(plain), plain);
    }
}
