//! The sandbox init for the server's own tests: the runtime re-executes this binary (the
//! `sandpool` binary plays this part in production, but the server's tests cannot depend on it).
fn main() {
    sandpool_sandbox::init_main();
}
