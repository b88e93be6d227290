//! Stand-alone sandbox init, used by this crate's tests and by embedders without the CLI.
fn main() {
    sandpool_sandbox::init_main()
}
