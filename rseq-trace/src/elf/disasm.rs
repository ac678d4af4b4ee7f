//! Instructions of a file as text, for the position histogram: Intel syntax on x86-64, the
//! instruction word on aarch64.

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};

use super::image::{Arch, ElfImage};

/// Longest x86-64 instruction.
const MAX_INSN: usize = 15;
/// Sections longer than this are decoded one position at a time instead.
const MAX_SECTION_BYTES: u64 = 64 * 1024;

/// The instruction at link-time address `addr`.
pub fn instruction_at(image: &ElfImage, addr: u64) -> String {
    match image.arch {
        Arch::X86_64 => match image.bytes(addr, MAX_INSN).or_else(|| image.bytes(addr, 1)) {
            Some(bytes) => {
                let insn = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE).decode();
                if insn.is_invalid() {
                    return "(not an instruction boundary)".into();
                }
                format(&insn)
            }
            None => "?".into(),
        },
        Arch::Aarch64 => aarch64_word(image, addr),
    }
}

/// Every instruction in `[from, to)`, decoded from `from`: (address, text).
pub fn instructions(image: &ElfImage, from: u64, to: u64) -> Vec<(u64, String)> {
    let len = to.saturating_sub(from);
    if len == 0 || len > MAX_SECTION_BYTES {
        return Vec::new();
    }
    match image.arch {
        Arch::X86_64 => {
            let Some(bytes) = image.bytes(from, len as usize) else {
                return Vec::new();
            };
            Decoder::with_ip(64, bytes, from, DecoderOptions::NONE)
                .into_iter()
                .take_while(|i| !i.is_invalid())
                .map(|i| (i.ip(), format(&i)))
                .collect()
        }
        Arch::Aarch64 => (from..to)
            .step_by(4)
            .map(|a| (a, aarch64_word(image, a)))
            .collect(),
    }
}

fn aarch64_word(image: &ElfImage, addr: u64) -> String {
    image
        .read_u32(addr)
        .map_or_else(|| "?".into(), |w| format!(".inst {w:#010x}"))
}

fn format(insn: &Instruction) -> String {
    let mut formatter = IntelFormatter::new();
    let o = formatter.options_mut();
    o.set_hex_prefix("0x");
    o.set_hex_suffix("");
    o.set_uppercase_hex(false);
    o.set_branch_leading_zeros(false);
    o.set_space_after_operand_separator(true);
    o.set_show_branch_size(false);
    let mut text = String::new();
    formatter.format(insn, &mut text);
    text
}
