//! The binary: subcommands that are not built yet say so and exit non-zero; bad flags exit 2.

use std::process::Command;

fn ticket_svc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ticket-svc"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn unbuilt_subcommands_say_so_and_fail() {
    for args in [
        &["api"][..],
        &["worker"],
        &["up"],
        &["demo", "--buyers", "10"],
    ] {
        let out = ticket_svc(args);
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not built yet"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn bad_flags_exit_2() {
    let out = ticket_svc(&["rush", "--target", "http://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ticket_svc(&["nonsense"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn rush_against_nothing_fails_with_one_clear_line() {
    let out = ticket_svc(&[
        "rush",
        "--target",
        "http://127.0.0.1:1",
        "--event",
        "1",
        "--buyers",
        "1",
        "--timeout-ms",
        "500",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("could not read event 1"), "{err}");
}
