//! The promise that tracing never breaks the traced program: no probe is ever inside
//! [start_ip, post_commit_ip). Checked with the breakpoints in the process's own code and the
//! kernel's own list of attached uprobes, against the descriptors as the workload itself sees
//! them at run time, so neither side is rseq-trace's reading of the tables.

mod support;

use std::{collections::HashSet, fs};

use rseq_common::{Cookie, Event};
use support::{kernel_links, workload_bin, Tracer, Workload};

/// The 5-byte nop of a marker (`nopl 0(%rax,%rax,1)`), which the kernel optimizes into a call.
const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];

/// /proc/PID/maps lines of one file: (start, end, file offset).
fn file_mappings(pid: u32, path: &str) -> Vec<(u64, u64, u64)> {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(path))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (s, e) = f[0].split_once('-').unwrap();
            let hex = |x: &str| u64::from_str_radix(x, 16).unwrap();
            (hex(s), hex(e), hex(f[2]))
        })
        .collect()
}

fn to_file_offset(maps: &[(u64, u64, u64)], addr: u64) -> u64 {
    let (s, _, off) = maps
        .iter()
        .find(|(s, e, _)| addr >= *s && addr < *e)
        .unwrap_or_else(|| panic!("{addr:#x} is not mapped from the workload"));
    addr - s + off
}

/// File offsets where the process's code differs from the file by a breakpoint byte (int3):
/// the uprobes the kernel installed, as the CPU will meet them, on every kernel (the link list
/// says where probes are only from Linux 6.6 on).
fn breakpoints(pid: u32, path: &str) -> HashSet<u64> {
    use std::os::unix::fs::FileExt;
    let file = fs::read(path).unwrap();
    let mem = fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut found = HashSet::new();
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let code = maps.lines().filter(|l| l.ends_with(path)).filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (s, e) = f[0].split_once('-')?;
        let hex = |x: &str| u64::from_str_radix(x, 16).ok();
        f[1].contains('x').then_some((hex(s)?, hex(e)?, hex(f[2])?))
    });
    for (start, end, off) in code {
        let mut bytes = vec![0u8; (end - start) as usize];
        if mem.read_exact_at(&mut bytes, start).is_err() {
            continue; // not readable (a guard page)
        }
        for (i, b) in bytes.iter().enumerate() {
            let at = off as usize + i;
            if *b == 0xcc && file.get(at).is_some_and(|f| *f != 0xcc) {
                found.insert(at as u64);
            }
        }
    }
    found
}

#[test]
fn no_probe_inside_any_critical_section_and_none_left_after_exit() {
    support::require_root();
    let exe = fs::canonicalize(workload_bin()).unwrap();
    let exe = exe.to_str().unwrap();

    let workload = Workload::start(&["--threads", "2", "--iterations", "2000"], &[]);
    let maps = file_mappings(workload.pid, exe);
    assert!(!maps.is_empty(), "no mapping of {exe} in the workload");
    let tracer = Tracer::attach(workload.pid, &[]);
    let probes: Vec<_> = kernel_links::uprobes()
        .into_iter()
        .filter(|u| u.file == exe)
        .collect();
    let int3 = breakpoints(workload.pid, exe);
    workload.release();
    let truth = workload.finish();
    tracer.finish();
    let descriptors = truth["descriptors"].as_array().unwrap();
    assert_eq!(descriptors.len(), 3);
    let at = |d: &serde_json::Value, k: &str| to_file_offset(&maps, d[k].as_u64().unwrap());

    // What the CPU meets: no breakpoint inside a section, on any kernel.
    assert!(!int3.is_empty(), "no breakpoint in the workload's code");
    for d in descriptors {
        let (start, end) = (at(d, "start_ip"), at(d, "post_commit_ip"));
        assert!(
            !int3.iter().any(|b| (start..end).contains(b)),
            "a breakpoint inside {} [{start:#x}, {end:#x}): {int3:x?}",
            d["function"]
        );
    }
    if probes.is_empty() {
        // Before Linux 6.6 the kernel neither makes multi links nor tells where a perf-event
        // link's uprobe is: the breakpoints above are the whole check.
        eprintln!(
            "the kernel lists no uprobe links (before 6.6): checked {} breakpoints in memory",
            int3.len()
        );
        let expected: usize = descriptors
            .iter()
            .map(|d| 2 + d["exit_ips"].as_array().unwrap().len())
            .sum();
        assert_eq!(int3.len(), expected, "breakpoints: {int3:x?}");
        return;
    }
    let listed: HashSet<u64> = probes.iter().map(|p| p.offset).collect();
    assert_eq!(listed, int3, "the kernel's link list and the code disagree");

    // One multi link per file: detaching is one grace period, not one per probe (~100 ms).
    assert!(
        probes.iter().all(|p| p.multi),
        "probes not in uprobe multi links: {probes:#?}"
    );

    // The safety property, over every probe the kernel has on the file.
    for p in &probes {
        for d in descriptors {
            let (start, end) = (at(d, "start_ip"), at(d, "post_commit_ip"));
            assert!(
                !(start..end).contains(&p.offset),
                "probe at file offset {:#x} is inside {} [{start:#x}, {end:#x})",
                p.offset,
                d["function"]
            );
        }
    }

    assert_probes_where_they_count(&probes, descriptors, &maps, exe);

    // rseq-trace exited with the workload: none of its probes may remain.
    let left: Vec<_> = kernel_links::uprobes()
        .into_iter()
        .filter(|u| u.file == exe)
        .collect();
    assert!(
        left.is_empty(),
        "probes left after rseq-trace exited: {left:#?}"
    );
}

/// The probes really are at the points that count: per section, an entry probe before
/// start_ip (the descriptor store ending there, or the section's START marker nop a few
/// instructions earlier), one on abort_ip (or the ABORT marker's nop after it), one per exit
/// (or its cancel marker's nop), and no other.
fn assert_probes_where_they_count(
    probes: &[kernel_links::Uprobe],
    descriptors: &[serde_json::Value],
    maps: &[(u64, u64, u64)],
    exe: &str,
) {
    let at = |d: &serde_json::Value, k: &str| to_file_offset(maps, d[k].as_u64().unwrap());
    let offsets: HashSet<(u64, u8)> = probes
        .iter()
        .map(|p| {
            let c = Cookie::decode(p.cookie).expect("cookie written by rseq-trace");
            (p.offset, c.event as u8)
        })
        .collect();
    assert_eq!(offsets.len(), probes.len(), "duplicate probes: {probes:#?}");
    let file = fs::read(exe).unwrap();
    let is_marker_nop = |off: u64| file.get(off as usize..off as usize + 5) == Some(&NOP5[..]);
    let mut expected = 0;
    for d in descriptors {
        let start = at(d, "start_ip");
        let entry = probes
            .iter()
            .find(|p| {
                p.offset < start
                    && start - p.offset <= 48
                    && Cookie::decode(p.cookie).unwrap().event == Event::Entry
            })
            .unwrap_or_else(|| panic!("no entry probe before {}: {probes:#?}", d["function"]));
        // The workload marks counter_add and list_push: their probes are the cheap nops.
        let marked = d["function"] != "rseq_workload_list_pop";
        assert_eq!(
            is_marker_nop(entry.offset),
            marked,
            "entry probe of {} at {:#x}",
            d["function"],
            entry.offset
        );
        if !marked {
            assert!(start - entry.offset <= 15, "the store ends at start_ip");
        }
        let marker_shift = if marked { 5 } else { 0 };
        let abort = at(d, "abort_ip") + marker_shift;
        assert!(
            offsets.contains(&(abort, Event::Abort as u8)),
            "abort probe of {}",
            d["function"]
        );
        for exit in d["exit_ips"].as_array().unwrap() {
            let off = to_file_offset(maps, exit.as_u64().unwrap()) + marker_shift;
            assert!(
                offsets.contains(&(off, Event::Cancel as u8)),
                "no cancel probe at {off:#x}"
            );
        }
        expected += 2 + d["exit_ips"].as_array().unwrap().len();
    }
    assert_eq!(probes.len(), expected, "unexpected probes: {probes:#?}");
}
