//! Writes the seed corpus of the `streams` fuzz target (see fuzz/README.md) into the directory given as the
//! argument: each wire format's sample stream, selector byte first, at chunk sizes 1, 7 and 64.

use catena_providers::fuzzing::{sample, Format};

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).expect("usage: fuzz_seed <corpus directory>");
    std::fs::create_dir_all(&dir)?;
    for (i, format) in Format::ALL.iter().enumerate() {
        for cut in [1u8, 7, 64] {
            let selector = i as u8 | ((cut - 1) << 2);
            let mut input = vec![selector];
            input.extend_from_slice(sample(*format).as_bytes());
            std::fs::write(format!("{dir}/{format:?}-{cut}"), input)?;
        }
    }
    Ok(())
}
