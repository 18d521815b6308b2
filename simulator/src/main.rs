//! kks-sim: terminal emulators and the disbursement-day load generator.
//!
//! The scenarios, emulators and report arrive with the simulator issue; this
//! binary already links the switch's codec so that it speaks the same wire.

fn main() {
    eprintln!("kks-sim: scenarios are not implemented yet; see README.md");
    std::process::exit(2);
}
