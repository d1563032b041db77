//! Every provider's streaming path on arbitrary bodies: the first byte picks the wire format and the chunk size,
//! the rest is the body. A read must end (the fuzzer's timeout), must not panic, and must yield nothing after an
//! error.
#![no_main]

use catena_providers::fuzzing::{read, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let format = Format::ALL[(selector & 3) as usize];
    let cut = 1 + (selector >> 2) as usize;
    let outcome = read(format, body, cut);
    assert_eq!(outcome.after_error, 0, "{format:?} yielded items after an error");
});
