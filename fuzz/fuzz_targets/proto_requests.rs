#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| connect_fuzz::proto_requests(data));
