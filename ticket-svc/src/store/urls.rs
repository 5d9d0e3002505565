//! Database URLs as the command line gives them: a list split into URLs, the scheme that picks a
//! store, and a URL made fit for a log line or an error (no password). Pure.

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Whether `text` begins a database URL this crate knows.
fn starts_a_url(text: &str) -> bool {
    text.starts_with("sqlite://") || is_postgres_url(text)
}

/// Splits a comma-separated list of database URLs (`TICKET_DB`, or a `--db` value). A piece that
/// does not start with a known scheme continues the URL before it, so a PostgreSQL URL with
/// several hosts (`postgres://h1:5432,h2:5432/db`) stays one URL. Blank pieces are dropped and
/// each URL is trimmed.
pub fn split_db_urls(list: &str) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for piece in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match urls.last_mut() {
            Some(last) if !starts_a_url(piece) => {
                last.push(',');
                last.push_str(piece);
            }
            _ => urls.push(piece.to_owned()),
        }
    }
    urls
}

/// `url` with its password, if any, replaced by `***` (in the user part and in a `password=`
/// parameter): what errors and logs may show.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, hosts)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{hosts}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::{redacted_url, split_db_urls};

    #[test]
    fn a_list_splits_into_urls_and_a_multi_host_url_stays_whole() {
        assert_eq!(
            split_db_urls("sqlite://data/tickets.db"),
            ["sqlite://data/tickets.db"]
        );
        assert_eq!(
            split_db_urls("postgres://a/t0, postgres://b/t1,postgresql://c/t2,"),
            ["postgres://a/t0", "postgres://b/t1", "postgresql://c/t2"]
        );
        assert_eq!(
            split_db_urls("postgres://h1:5432,h2:5432/t0,postgres://h3/t1"),
            ["postgres://h1:5432,h2:5432/t0", "postgres://h3/t1"]
        );
        assert!(split_db_urls(" , ").is_empty());
        // Something that is no URL stays a URL of its own when it comes first (and is refused
        // later with its scheme named).
        assert_eq!(split_db_urls("mysql://x,y"), ["mysql://x,y"]);
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redacted_url("postgres://ticket:s3cret@db.internal:5432/tickets"),
            "postgres://ticket:***@db.internal:5432/tickets"
        );
        assert_eq!(
            redacted_url("postgres://ticket@db/tickets?password=s3cret&sslmode=require"),
            "postgres://ticket@db/tickets?password=***&sslmode=require"
        );
        assert_eq!(
            redacted_url("postgres://u:p@w@h1,h2/t"),
            "postgres://u:***@h1,h2/t"
        );
        assert_eq!(
            redacted_url("sqlite://data/tickets.db"),
            "sqlite://data/tickets.db"
        );
        assert_eq!(redacted_url("no scheme"), "no scheme");
    }
}
