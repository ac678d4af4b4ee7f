//! Any bytes given to the table reader, as an ELF file, must give tables or warnings, never a
//! panic, a hang or an allocation the size of a lie in a header.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rseq_trace::{
    catalog::probe_plan,
    elf::{self, symbols},
};

fuzz_target!(|data: &[u8]| {
    let Ok(image) = elf::image::ElfImage::parse(Path::new("fuzz-input"), data.to_vec()) else {
        return;
    };
    let found = elf::discover(&image);
    let guard = probe_plan::Guard::new(&found.sections);
    for cs in &found.sections {
        let _ = probe_plan::plan(&image, cs, &guard);
        let _ = symbols::function_offset(&image, cs.start_ip);
    }
});
