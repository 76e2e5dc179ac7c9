// No C runtime: our own `_start` is the entry point (see src/main.rs).
fn main() {
    println!("cargo:rustc-link-arg-bins=-nostartfiles");
}
