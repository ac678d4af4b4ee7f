//! One instruction of a file as text, for the position histogram.

use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

use super::image::{Arch, ElfImage};

/// The instruction at link-time address `addr`: Intel syntax on x86-64, the word on aarch64.
pub fn instruction_at(image: &ElfImage, addr: u64) -> String {
    match image.arch {
        Arch::X86_64 => match image.bytes(addr, 15).or_else(|| image.bytes(addr, 1)) {
            Some(bytes) => {
                let insn = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE).decode();
                if insn.is_invalid() {
                    return "(not an instruction boundary)".into();
                }
                let mut formatter = IntelFormatter::new();
                let o = formatter.options_mut();
                o.set_hex_prefix("0x");
                o.set_hex_suffix("");
                o.set_uppercase_hex(false);
                o.set_branch_leading_zeros(false);
                o.set_space_after_operand_separator(true);
                o.set_show_branch_size(false);
                let mut text = String::new();
                formatter.format(&insn, &mut text);
                text
            }
            None => "?".into(),
        },
        Arch::Aarch64 => image
            .read_u32(addr)
            .map_or_else(|| "?".into(), |w| format!(".inst {w:#010x}")),
    }
}
