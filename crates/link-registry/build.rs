//! The PostgreSQL variants of the integration tests run when `TEST_DATABASE_URL` names a server;
//! without it they are listed as ignored (and say why) instead of passing without running.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo:rerun-if-env-changed=TEST_DATABASE_URL");
    if std::env::var_os("TEST_DATABASE_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=postgres_tests");
    }
}
