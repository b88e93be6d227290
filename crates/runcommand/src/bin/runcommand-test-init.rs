fn main() {
    sandpool_sandbox::init_main()
}
