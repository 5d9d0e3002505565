//! `balancer`: not built yet.
fn main() {
    eprintln!("balancer: not built yet");
    std::process::exit(2);
}
