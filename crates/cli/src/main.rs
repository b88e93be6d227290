//! The `sandpool` command.
fn main() {
    if std::env::args().nth(1).as_deref() == Some("__sandbox-init") {
        sandpool_sandbox::init_main();
    }
    eprintln!("sandpool: not implemented");
    std::process::exit(2);
}
