//! `ticket-svc`: not built yet.
fn main() {
    eprintln!("ticket-svc: not built yet");
    std::process::exit(2);
}
