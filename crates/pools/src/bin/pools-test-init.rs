//! The sandbox init used by sandpool-pools' integration tests (`sandpool __sandbox-init` in production).

fn main() {
    sandpool_sandbox::init_main()
}
