//! The fuzz targets' properties on stable: every seed and every crash the fuzzer ever found
//! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`) replayed through the same functions
//! the libFuzzer targets call, so a fixed crash stays fixed in `cargo test`.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code, clippy::all)]
mod bodies;

use std::path::Path;

/// A target's name and the property it checks.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 6] = [
    ("jws_parse", bodies::jws_parse),
    ("verify_mutated", bodies::verify_mutated),
    ("jwks_json", bodies::jwks_json),
    ("registry_inputs", bodies::registry_inputs),
    ("secret_open", bodies::secret_open),
    ("proto_requests", bodies::proto_requests),
];

#[test]
fn every_fuzz_seed_and_kept_crash_replays_without_a_failure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (target, body) in TARGETS {
        for dir in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.file_name().is_some_and(|n| n == ".keep") {
                    continue;
                }
                let input = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| body(&input));
                assert!(outcome.is_ok(), "{target}: {} fails again", path.display());
                replayed += 1;
            }
        }
        // Each target also holds for a few inputs made here.
        for input in [&b""[..], b"\0", b"v2:", b"{}", b"a.b.c", &[0xff; 64]] {
            body(input);
        }
    }
    assert!(replayed >= 18, "the seeds are there: {replayed}");
}
