//! Tests of `config`.
use super::*;
use clap::Parser;

#[test]
fn parses_backend_with_weight() {
    let b: BackendSpec = "127.0.0.1:8081,weight=3".parse().unwrap();
    assert_eq!(b.addr, "127.0.0.1:8081".parse().unwrap());
    assert_eq!(b.weight, 3);
    assert!("127.0.0.1:8081,weight=0".parse::<BackendSpec>().is_err());
    assert!("127.0.0.1:8081,color=red".parse::<BackendSpec>().is_err());
    assert!("nope".parse::<BackendSpec>().is_err());
}

#[test]
fn parses_durations() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
    assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("-1s").is_err());
}

#[test]
fn flags_win_over_file() {
    let args = Args::try_parse_from([
        "balancer",
        "--backend",
        "127.0.0.1:9001",
        "--strategy",
        "p2c",
    ])
    .unwrap();
    let file: FileConfig = toml::from_str(
        r#"
        backends = ["127.0.0.1:9002,weight=2"]
        strategy = "least-conn"
        health-interval = "250ms"
        "#,
    )
    .unwrap();
    let c = Config::resolve(&args, Some(&file)).unwrap();
    assert_eq!(c.strategy, Strategy::P2c);
    assert_eq!(c.backends.len(), 1);
    assert_eq!(c.backends[0].addr.port(), 9001);
    assert_eq!(c.health.interval, Duration::from_millis(250));
}

#[test]
fn rejects_no_backends_and_duplicates() {
    let args = Args::try_parse_from(["balancer"]).unwrap();
    assert!(Config::resolve(&args, None).is_err());
    let args = Args::try_parse_from([
        "balancer",
        "--backend",
        "127.0.0.1:9001",
        "--backend",
        "127.0.0.1:9001",
    ])
    .unwrap();
    assert!(Config::resolve(&args, None).is_err());
}

#[test]
fn an_admin_listener_other_machines_reach_needs_a_token_or_admin_insecure() {
    let resolve = |extra: &[&str]| {
        let args = Args::try_parse_from(
            [&["balancer", "--backend", "127.0.0.1:9001"][..], extra].concat(),
        )
        .unwrap();
        Config::resolve(&args, None).and_then(|c| c.validate().map(|()| c))
    };
    let open = ["--admin-listen", "0.0.0.0:9080"];
    let err = resolve(&open).unwrap_err().to_string();
    assert!(err.contains("--admin-insecure"), "{err}");
    assert!(resolve(&[&open[..], &["--admin-token", "t"]].concat()).is_ok());
    assert!(resolve(&[&open[..], &["--admin-insecure"]].concat()).is_ok());
    assert!(resolve(&["--admin-listen", "127.0.0.1:9080"]).is_ok());
    assert!(resolve(&["--admin-listen", "[::1]:9080"]).is_ok());
    // `all` needs the token; an empty token is refused; no listener, nothing to check.
    assert!(resolve(&["--admin-auth", "all"]).is_err());
    assert!(resolve(&["--admin-auth", "all", "--admin-token", "t"]).is_ok());
    assert!(resolve(&["--admin-token", ""]).is_err());
    assert!(resolve(&["--no-admin", "--admin-auth", "all"]).is_ok());
    // The file says the same.
    let file: FileConfig = toml::from_str(
        r#"
        admin-listen = "0.0.0.0:9080"
        admin-auth = "all"
        admin-token = "t"
        "#,
    )
    .unwrap();
    let args = Args::try_parse_from(["balancer", "--backend", "127.0.0.1:9001"]).unwrap();
    let c = Config::resolve(&args, Some(&file)).unwrap();
    assert_eq!(c.admin_auth, AdminAuth::All);
    c.validate().unwrap();
}

#[test]
fn replaying_keyed_requests_is_on_unless_a_flag_or_the_file_turns_it_off() {
    let parse = |extra: &[&str]| {
        Args::try_parse_from([&["balancer", "--backend", "127.0.0.1:9001"][..], extra].concat())
    };
    let resolve = |extra: &[&str], file: Option<&str>| {
        let file: Option<FileConfig> = file.map(|text| toml::from_str(text).unwrap());
        Config::resolve(&parse(extra).unwrap(), file.as_ref())
            .unwrap()
            .retry
            .replay_idempotency_key
    };
    assert!(RetryConfig::default().replay_idempotency_key);
    assert!(resolve(&[], None));
    for off in ["off", "false"] {
        assert!(!resolve(&["--replay-idempotency-key", off], None), "{off}");
    }
    for on in ["on", "true"] {
        assert!(resolve(&["--replay-idempotency-key", on], None), "{on}");
    }
    // A value is required (it is on already), and only these.
    assert!(parse(&["--replay-idempotency-key"]).is_err());
    assert!(parse(&["--replay-idempotency-key", "maybe"]).is_err());
    // The file says it as its other on/off settings do, and the flag wins over it.
    assert!(!resolve(&[], Some("replay-idempotency-key = false")));
    assert!(resolve(&[], Some("replay-idempotency-key = true")));
    let off_in_file = Some("replay-idempotency-key = false");
    assert!(resolve(&["--replay-idempotency-key", "on"], off_in_file));
    let on_in_file = Some("replay-idempotency-key = true");
    assert!(!resolve(&["--replay-idempotency-key", "off"], on_in_file));
    assert!(toml::from_str::<FileConfig>(r#"replay-idempotency-key = "off""#).is_err());
}

#[test]
fn help_describes_replay_idempotency_key() {
    use clap::CommandFactory;
    let help = Args::command().render_long_help().to_string();
    let at = help
        .find("--replay-idempotency-key <on|off>")
        .expect("in --help");
    let entry = help.get(at..).unwrap_or_default();
    assert!(entry.contains("Idempotency-Key header"), "{entry}");
    assert!(entry.contains("default on"), "{entry}");
    let short = Args::command().render_help().to_string();
    assert!(short.contains("[possible values: on, off]"), "{short}");
}
