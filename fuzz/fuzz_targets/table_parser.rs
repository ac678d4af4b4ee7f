//! Any bytes given to the table reader, as an ELF file, must give tables or warnings, never a
//! panic, a hang or an allocation the size of a lie in a header.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rseq_trace::{probe_points, symbolize, table};

fuzz_target!(|data: &[u8]| {
    let Ok(image) = table::elf::ElfImage::parse(Path::new("fuzz-input"), data.to_vec()) else {
        return;
    };
    let found = table::discover(&image);
    let guard = probe_points::Guard::new(&found.sections);
    for cs in &found.sections {
        let _ = probe_points::plan(&image, cs, &guard);
        let _ = symbolize::function_offset(&image, cs.start_ip);
    }
});
