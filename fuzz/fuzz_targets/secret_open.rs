#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| connect_fuzz::secret_open(data));
