# rseq-trace's gdb extension: steps over restartable-sequence critical sections.
#
# Every ptrace stop schedules the stepped thread out, and the kernel then aborts any critical
# section the thread is inside: single-stepping can never get through one, and code that
# retries until commit never leaves its loop under `stepi`, `step` or `next`. This extension
# knows every section of every objfile gdb loads (from `rseq-trace list --json`, the one
# reader of the tables) and, when a stepping command reaches a section's entry, puts temporary
# breakpoints on every exit of the section's key, lets the thread run through it, and stops
# where it came out.
#
# Load it with `source $(rseq-trace gdb --print-script)`, or start gdb with `rseq-trace gdb`.
# Commands: `info rseq [KEY|ADDRESS]`, `set rseq-step on|off`, `show rseq-step`.

import json
import os
import subprocess

import gdb

# Set by `rseq-trace gdb --print-script` when it writes this file; else found on PATH.
RSEQ_TRACE = os.environ.get("RSEQ_TRACE_BIN", "rseq-trace")

STEPPING = ("stepi", "nexti", "step", "next", "until", "advance")
LINE_STEPPING = ("step", "next", "until")


class Section:
    """One critical section at its run-time addresses."""

    def __init__(self, listed, bias, path):
        self.path = path
        self.name = listed["name"]
        self.key = listed.get("key") or self.name
        self.sources = listed.get("sources", [])
        reloc = lambda a: None if a is None else a + bias
        self.start = reloc(listed["start_ip"])
        self.commit = reloc(listed["post_commit_ip"])
        self.abort = reloc(listed["abort_ip"])
        self.exit_points = [reloc(a) for a in listed.get("exits", [])]
        markers = listed.get("markers") or {}
        self.start_marker = reloc(markers.get("start"))
        self.finish_marker = reloc(markers.get("finish"))
        self.abort_marker = reloc(markers.get("abort"))
        self.cancel_markers = [reloc(a) for a in markers.get("cancels", [])]
        probes = listed.get("probes") or {}
        # The entry: the START marker, or the store of the descriptor's address (both before
        # start_ip, outside the section).
        self.entry = reloc(probes.get("entry")) or self.start_marker

    def inside(self, pc):
        return self.start <= pc < self.commit

    def exits(self):
        """(address, how) of every way out of this section."""
        out = [(self.commit, "committed"), (self.abort, "aborted")]
        out += [(a, "cancelled") for a in self.exit_points]
        if self.finish_marker is not None:
            out.append((self.finish_marker, "committed"))
        if self.abort_marker is not None:
            out.append((self.abort_marker, "aborted"))
        out += [(a, "cancelled") for a in self.cancel_markers]
        return out


class Catalog:
    """The sections of the inferior's objfiles, relocated by their load addresses."""

    def __init__(self):
        self.listings = {}  # path -> listed sections (file addresses), or [] without tables
        self.sections = None  # relocated, for the current process
        self.pid = None

    def listed(self, path):
        if path not in self.listings:
            self.listings[path] = read_listing(path)
        return self.listings[path]

    def forget(self):
        self.sections = None

    def current(self):
        pid = gdb.selected_inferior().pid
        if pid == 0:
            return []
        if self.sections is None or self.pid != pid:
            self.pid = pid
            self.sections = self.relocate(pid)
        return self.sections

    def relocate(self, pid):
        out = []
        bases = load_bases(pid)
        for objfile in gdb.objfiles():
            path = objfile.filename
            if not path or os.path.realpath(path) not in bases:
                continue
            listing = self.listed(path)
            if not listing:
                continue
            bias = bases[os.path.realpath(path)] - listing["load_vaddr"]
            out += [Section(s, bias, path) for s in listing["sections"]]
        return out

    def at_entry(self, pc):
        return next((s for s in self.current() if s.entry == pc), None)

    def containing(self, pc):
        return next((s for s in self.current() if s.inside(pc)), None)

    def of_key(self, key):
        return [s for s in self.current() if s.key == key]


def read_listing(path):
    """`rseq-trace list --json` of one file: {load_vaddr, sections}, or None without tables."""
    try:
        out = subprocess.run([RSEQ_TRACE, "list", "--json", path], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        gdb.write(f"rseq: cannot run {RSEQ_TRACE} ({e}); set RSEQ_TRACE_BIN\n", gdb.STDERR)
        return None
    if out.returncode != 0:
        return None
    listings = json.loads(out.stdout)
    if not listings or not listings[0]["sections"]:
        return None
    return listings[0]


def load_bases(pid):
    """Each mapped file's lowest mapping address (the one at file offset 0)."""
    bases = {}
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                parts = line.split(None, 5)
                if len(parts) < 6 or int(parts[2], 16) != 0:
                    continue
                start = int(parts[0].split("-")[0], 16)
                path = parts[5].strip()
                if path.startswith("/") and path not in bases:
                    bases[path] = start
    except OSError:
        pass
    return bases


CATALOG = Catalog()


class StepParameter(gdb.Parameter):
    """Whether stepping commands step over rseq critical sections (on by default)."""

    set_doc = "Set whether stepping steps over rseq critical sections."
    show_doc = "Show whether stepping steps over rseq critical sections."

    def __init__(self):
        super().__init__("rseq-step", gdb.COMMAND_RUNNING, gdb.PARAM_BOOLEAN)
        self.value = True

    def get_set_string(self):
        return f"rseq: stepping over critical sections is {'on' if self.value else 'off'}"

    def get_show_string(self, value):
        return f"Stepping over rseq critical sections is {value}."


STEP = StepParameter()


class EntryBreakpoint(gdb.Breakpoint):
    """At a section's entry, enabled only while a stepping command runs (in all-stop mode a
    breakpoint stops every thread, and a thread stopped inside its own section aborts it)."""

    def __init__(self, section):
        super().__init__(f"*{section.entry:#x}", internal=True)
        self.section = section


class State:
    """The command being run, the step-over it needs, and the entry breakpoints."""

    def __init__(self):
        self.command = None
        self.pending = None  # (section, pc) where a stepping command stopped
        self.entries = []
        self.entries_of = None
        self.busy = False

    def arm_entries(self, on):
        thread = None
        if on:
            sections = CATALOG.current()
            key = (CATALOG.pid, len(sections))
            if self.entries_of != key:
                self.drop_entries()
                self.entries = [EntryBreakpoint(s) for s in sections if s.entry is not None]
                self.entries_of = key
            selected = gdb.selected_thread()
            thread = selected.global_num if selected is not None else None
        for b in self.entries:
            if b.is_valid():
                # Only the stepped thread stops there; the others pass (outside any section).
                if on and b.thread != thread:
                    b.thread = thread
                b.enabled = on

    def drop_entries(self):
        for b in self.entries:
            if b.is_valid():
                b.delete()
        self.entries = []
        self.entries_of = None


STATE = State()


def rseq_trace_begin(command):
    """Run by `hook-COMMAND` before each stepping or resuming command."""
    STATE.command = command
    STATE.pending = None
    STATE.arm_entries(STEP.value and command in STEPPING)


def rseq_trace_after(command):
    """Run by `hookpost-COMMAND` once a stepping command stopped: if it stopped at a
    section's entry (or inside one), run the thread through the section; a line-stepping
    command then goes on from where it came out, as gdb would have."""
    try:
        while STATE.pending is not None and STEP.value:
            section, pc = STATE.pending
            STATE.pending = None
            if not step_over(section, pc) or command not in LINE_STEPPING:
                break
            # Hooks do not run inside a hook: arm the entries again by hand.
            rseq_trace_begin(command)
            try:
                gdb.execute(command)
            except gdb.error as e:
                # An abort handler without a symbol: `next` has no line to step.
                gdb.write(f"rseq: {command} cannot go on from here ({e})\n")
                break
    finally:
        STATE.arm_entries(False)
        STATE.command = None


def define_hooks():
    for command in STEPPING:
        gdb.execute(f"define hook-{command}\npython rseq_trace_begin('{command}')\nend")
        gdb.execute(f"define hookpost-{command}\npython rseq_trace_after('{command}')\nend")
    for command in ("continue", "run", "start", "finish", "jump", "signal"):
        gdb.execute(f"define hook-{command}\npython rseq_trace_begin('{command}')\nend")


def on_stop(_event):
    if STATE.busy or not STEP.value or STATE.command not in STEPPING:
        return
    try:
        pc = gdb.selected_frame().pc()
    except gdb.error:
        return
    section = CATALOG.at_entry(pc) or CATALOG.containing(pc)
    if section is not None:
        STATE.pending = (section, pc)


def step_over(section, pc):
    """Runs the selected thread through `section` to one of its key's exits and says how it
    came out; false if it stopped elsewhere (another breakpoint, a signal, an exit)."""
    thread = gdb.selected_thread().global_num
    exits = {}
    for s in CATALOG.of_key(section.key) or [section]:
        for addr, how in s.exits():
            exits.setdefault(addr, how)
    breaks = []
    STATE.busy = True
    try:
        for addr in exits:
            b = gdb.Breakpoint(f"*{addr:#x}", internal=True, temporary=True)
            b.thread = thread
            breaks.append(b)
        gdb.execute("continue", to_string=True)
        now = gdb.selected_frame().pc() if gdb.selected_inferior().pid else None
    finally:
        for b in breaks:
            if b.is_valid():
                b.delete()
        STATE.busy = False
    how = exits.get(now)
    if how is None:
        where = "the program exited" if now is None else f"it stopped at {now:#x}"
        gdb.write(f"rseq: stepping over {section.key}: {where} before the section came out\n")
        return False
    if how == "aborted":
        how += (": the thread was stopped inside it, which always aborts it"
                if section.inside(pc) else
                ": restarted by the kernel (preemption, migration, signal), or its own check "
                "failed")
    elif how == "cancelled":
        how += f" at {now:#x}"
    gdb.write(f"rseq: stepped over {section.key} ({how})\n")
    gdb.execute("x/i $pc")
    return True


def on_new_objfile(_event):
    CATALOG.forget()
    STATE.entries_of = None


def on_exited(_event):
    CATALOG.forget()
    # A new run may map the files elsewhere: its entry breakpoints are made anew.
    STATE.drop_entries()


def on_breakpoint_created(bp):
    if STATE.busy or isinstance(bp, EntryBreakpoint) or bp.type != gdb.BP_BREAKPOINT:
        return
    if not bp.visible:
        return
    for loc in bp.locations:
        section = CATALOG.containing(loc.address) if loc.address is not None else None
        if section is not None:
            entry = f"*{section.entry:#x}" if section.entry is not None else "its entry"
            gdb.write(
                f"rseq: warning: breakpoint {bp.number} at {loc.address:#x} is inside critical "
                f"section {section.key} ({section.name}, {section.start:#x}-{section.commit:#x}):"
                f" every hit makes the section abort. Break at its entry instead: "
                f"break {entry}\n", gdb.STDERR)


class InfoRseq(gdb.Command):
    """List the rseq critical sections of the program: info rseq [KEY|ADDRESS]."""

    def __init__(self):
        super().__init__("info rseq", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        sections = CATALOG.current()
        if not sections:
            gdb.write("rseq: no critical sections known (no process, or no tables in its "
                      "objfiles)\n")
            return
        arg = arg.strip()
        if arg:
            try:
                addr = int(gdb.parse_and_eval(arg)) if not any(s.key == arg for s in sections) \
                    else None
            except gdb.error:
                addr = None
            sections = [s for s in sections if s.key == arg
                        or (addr is not None and (s.inside(addr) or s.entry == addr))]
        for s in sections:
            line = gdb.find_pc_line(s.start)
            where = f"{line.symtab.filename}:{line.line}" if line.symtab else "no line info"
            exits = ", ".join(f"{a:#x}" for a in s.exit_points) or "none"
            gdb.write(f"{s.key}\n  {s.name} in {s.path}, {where}\n"
                      f"  entry {fmt(s.entry)}  start {s.start:#x}  commit {s.commit:#x}  "
                      f"abort {s.abort:#x}  exits {exits}\n"
                      f"  markers: start {fmt(s.start_marker)} finish {fmt(s.finish_marker)} "
                      f"abort {fmt(s.abort_marker)}  tables: {', '.join(s.sources)}\n")


def fmt(addr):
    return "-" if addr is None else f"{addr:#x}"


InfoRseq()
define_hooks()
gdb.events.stop.connect(on_stop)
gdb.events.new_objfile.connect(on_new_objfile)
gdb.events.exited.connect(on_exited)
gdb.events.breakpoint_created.connect(on_breakpoint_created)
