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
